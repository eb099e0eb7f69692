#!/usr/bin/env node
/**
 * Dependency hygiene: runs `npm audit --omit=dev --json` and fails when a runtime dependency has a
 * known vulnerability of high or critical severity.
 *
 * Exit codes:
 *   0  no finding at or above the level, or the audit could not be done (registry unreachable, audit
 *      endpoint answered with an error, npm timed out): a line starting with "npm audit skipped:" says why.
 *   1  findings at or above the level; each vulnerable package is listed with its advisories.
 *   2  the audit could not run for a reason of this project (no lockfile, npm missing, unreadable output).
 *
 * Usage: node scripts/audit.mjs [--level=low|moderate|high|critical] [--all] [-- <extra npm arguments>]
 *   --level  lowest severity that fails the run (default: high)
 *   --all    audit devDependencies too (informational; CI audits what users install)
 *   e.g. node scripts/audit.mjs -- --registry=https://registry.npmjs.org/
 */
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const SEVERITIES = ['info', 'low', 'moderate', 'high', 'critical'];
const TIMEOUT_MS = Number(process.env.STEADFAST_AUDIT_TIMEOUT_MS ?? 120_000);
/** Error codes that mean "the registry or its audit endpoint could not answer", not "this project is broken". */
const PROJECT_ERRORS = new Set(['ENOLOCK', 'EAUDITNOLOCK', 'EJSONPARSE', 'ENOENT']);

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

function parseArgs(argv) {
  const dash = argv.indexOf('--');
  const own = dash < 0 ? argv : argv.slice(0, dash);
  const extra = dash < 0 ? [] : argv.slice(dash + 1);
  let level = 'high';
  let all = false;
  for (const arg of own) {
    if (arg.startsWith('--level=')) level = arg.slice('--level='.length);
    else if (arg === '--all') all = true;
    else {
      console.error(
        `audit: unknown argument ${arg}\n(usage: node scripts/audit.mjs [--level=high] [--all] [-- npm args])`,
      );
      process.exit(2);
    }
  }
  if (!SEVERITIES.includes(level) || level === 'info') {
    console.error(
      `audit: --level must be one of low, moderate, high, critical (got ${JSON.stringify(level)})`,
    );
    process.exit(2);
  }
  return { level, all, extra };
}

function runNpmAudit(args) {
  return new Promise((resolve) => {
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
    const child = spawn(npm, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk) => {
      stdout += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk) => {
      stderr += chunk;
    });
    const timer = setTimeout(() => {
      child.kill('SIGTERM');
      resolve({ timedOut: true, code: null, stdout, stderr });
    }, TIMEOUT_MS);
    child.once('error', (error) => {
      clearTimeout(timer);
      resolve({ spawnError: error, code: null, stdout, stderr });
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function skip(reason) {
  console.log(`npm audit skipped: ${reason}`);
  console.log(
    '(The check runs wherever the npm registry answers; nothing was concluded about vulnerabilities.)',
  );
  process.exit(0);
}

function lastLines(text, n = 5) {
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !/Unknown user config/.test(line))
    .slice(-n)
    .join('\n  ');
}

/** Advisories behind a vulnerable package, as "title (severity) url" lines. */
function advisories(vulnerability) {
  const lines = [];
  for (const via of vulnerability.via ?? []) {
    if (typeof via === 'string') lines.push(`through ${via}`);
    else lines.push(`${via.title ?? 'advisory'} (${via.severity ?? '?'})${via.url ? ` ${via.url}` : ''}`);
  }
  return lines;
}

const { level, all, extra } = parseArgs(process.argv.slice(2));
const args = ['audit', ...(all ? [] : ['--omit=dev']), '--json', ...extra];
const result = await runNpmAudit(args);
const command = `npm ${args.join(' ')}`;

if (result.spawnError) {
  console.error(`audit: could not run npm: ${result.spawnError.message}`);
  process.exit(2);
}
if (result.timedOut) skip(`${command} did not finish within ${TIMEOUT_MS} ms (registry unreachable?)`);

let report;
try {
  report = JSON.parse(result.stdout);
} catch {
  // npm writes its JSON error object to stdout; no JSON at all means it failed before talking to anyone.
  if (
    result.code !== 0 &&
    /ENOTFOUND|EAI_AGAIN|ECONN|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|network/i.test(result.stderr)
  ) {
    skip(`the registry could not be reached:\n  ${lastLines(result.stderr)}`);
  }
  console.error(
    `audit: ${command} exited with ${result.code} and no JSON report:\n  ${lastLines(result.stderr)}`,
  );
  process.exit(2);
}

if (report?.error) {
  // npm >= 10: { message, error: { summary, detail } }; older: { error: { code, summary, detail } }.
  const code = report.error.code ?? '';
  const why = [report.message, report.error.summary, report.error.detail].filter(Boolean).join(' - ');
  if (PROJECT_ERRORS.has(code)) {
    console.error(`audit: ${command} failed for a reason of this project [${code}]: ${why}`);
    process.exit(2);
  }
  skip(
    `the audit endpoint answered with an error${code ? ` [${code}]` : ''}: ${why || lastLines(result.stderr)}`,
  );
}

const counts = report?.metadata?.vulnerabilities;
if (!counts || typeof counts !== 'object') {
  skip(`${command} gave an answer without vulnerability counts (exit code ${result.code})`);
}

const failing = SEVERITIES.slice(SEVERITIES.indexOf(level));
const dependencies = report.metadata.dependencies ?? {};
const scope = all ? 'all dependencies' : 'runtime dependencies';
const summary = SEVERITIES.map((s) => `${s} ${counts[s] ?? 0}`).join(', ');
const failed = Object.entries(report.vulnerabilities ?? {}).filter(([, v]) => failing.includes(v.severity));

if (failed.length === 0 && failing.every((s) => !counts[s])) {
  const audited = all ? dependencies.total : dependencies.prod;
  console.log(
    `npm audit: no ${level}-or-worse finding in ${scope}` +
      `${audited === undefined ? '' : ` (${audited} package(s) incl. this one)`}; ${summary}`,
  );
  process.exit(0);
}

console.error(`npm audit: ${scope} have ${level}-or-worse vulnerabilities (${summary}):`);
for (const [name, vulnerability] of failed) {
  const range = vulnerability.range ? ` ${vulnerability.range}` : '';
  console.error(`- ${name}${range} [${vulnerability.severity}]`);
  for (const line of advisories(vulnerability)) console.error(`    ${line}`);
  if (vulnerability.fixAvailable) {
    const fix = vulnerability.fixAvailable;
    console.error(
      `    fix: ${fix === true ? 'npm audit fix' : `${fix.name}@${fix.version}${fix.isSemVerMajor ? ' (semver-major)' : ''}`}`,
    );
  }
}
process.exit(1);

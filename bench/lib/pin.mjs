/**
 * CPU pinning for the end-to-end benchmark: the benchmark process on one core, the PostgreSQL server on
 * the others.
 *
 * With the server's backends free to run on the client's core, every query's server work lands between
 * the client's instructions on the same core at moments that differ from one contender's turn to the
 * next; it evicts the client's caches and, on a small machine, takes its time slices. What a pool adds
 * is client-side CPU, and that is what the benchmark measures; pinned, the client's CPU per query is
 * steadier and closer to a deployment, where the database runs on another machine. Linux only (through
 * `taskset`, util-linux); elsewhere, or on a single core, nothing is pinned and the report says so.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';

/** Why pinning cannot be done here, or undefined when it can. */
export function pinningUnavailable() {
  if (process.platform !== 'linux') return 'not Linux';
  if (availableParallelism() < 2) return 'a single CPU';
  try {
    execFileSync('taskset', ['-p', String(process.pid)], { stdio: 'ignore' });
  } catch {
    return '`taskset` (util-linux) is not installed';
  }
  return undefined;
}

/** The pids of `parent`'s direct children, from /proc. */
function childrenOf(parent) {
  const children = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // Fields after the command name, which is parenthesised and may itself contain spaces: state, ppid.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === parent) children.push(Number(entry));
    } catch {
      // The process ended while being read.
    }
  }
  return children;
}

/** Sets the CPU affinity of every thread of `pid` to `cpus` (a taskset list such as "1-3"). */
function setAffinity(pid, cpus) {
  execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' });
}

/**
 * Pins this process to CPU 0 and the server whose data directory is `dataDir` (its postmaster and every
 * process it has forked; backends forked later inherit the postmaster's affinity) to the other CPUs.
 * Call it before any connection is opened. Returns what was pinned, or `{ reason }` when nothing was.
 */
export function pinClientAndServer(dataDir) {
  const reason = pinningUnavailable();
  if (reason !== undefined) return { reason };
  const last = availableParallelism() - 1;
  const server = last === 1 ? '1' : `1-${last}`;
  const postmaster = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n', 1)[0]);
  setAffinity(postmaster, server);
  for (const pid of childrenOf(postmaster)) {
    try {
      setAffinity(pid, server);
    } catch {
      // An auxiliary process that ended meanwhile: nothing to pin.
    }
  }
  setAffinity(process.pid, '0');
  return { client: '0', server };
}

/**
 * A Prometheus histogram that aggregates here and lets prom-client's registry read the totals when it is
 * scraped.
 *
 * prom-client's `Histogram#observe` converts, validates and hashes the label set on every call (about
 * 200 ns), and the pool records three durations per query: that alone would cost more than the pool's
 * whole hand-out. Here a series is a handle the collector looks up once; recording is a bucket search
 * over nine bounds and three additions. The registry accepts any metric with a name, help, type and an
 * async `get()` in prom-client's value shape, which is what this class provides, so the exposition (text
 * or OpenMetrics, JSON, cluster aggregation) is the same as a prom-client histogram's.
 */

/** One sample as prom-client's registry reads it from a metric's `get()`. */
export interface Sample {
  metricName: string;
  labels: Record<string, string | number>;
  value: number;
}

/** One label set's buckets, sum and count. Hold on to it and call `observe` on the hot path. */
export class HistogramSeries {
  /** Observations per bucket, not cumulative; the last slot is above every bound (+Inf). */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(
    readonly labels: Readonly<Record<string, string>>,
    private readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    const bounds = this.bounds;
    let i = 0;
    // Prometheus buckets are `le` (less than or equal): a value on a bound counts in that bound's bucket.
    while (i < bounds.length && value > bounds[i]!) i++;
    this.counts[i]!++;
    this.sum += value;
    this.count++;
  }

  reset(): void {
    this.counts.fill(0);
    this.sum = 0;
    this.count = 0;
  }
}

export class AggregatedHistogram {
  readonly type = 'histogram';
  /** How prom-client's cluster registry merges this metric across workers. */
  readonly aggregator = 'sum';
  readonly #series = new Map<string, HistogramSeries>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
    readonly bounds: readonly number[],
  ) {}

  /** The series of `labels` (every label name, in any order), created at zero on first use. */
  series(labels: Readonly<Record<string, string>>): HistogramSeries {
    const key = this.#key(labels);
    let series = this.#series.get(key);
    if (series === undefined) {
      series = new HistogramSeries(labels, this.bounds);
      this.#series.set(key, series);
    }
    return series;
  }

  remove(labels: Readonly<Record<string, string>>): void {
    this.#series.delete(this.#key(labels));
  }

  /** Zeroes every series (prom-client's `registry.resetMetrics()`); handles held by collectors stay valid. */
  reset(): void {
    for (const series of this.#series.values()) series.reset();
  }

  async get(): Promise<{
    name: string;
    help: string;
    type: 'histogram';
    values: Sample[];
    aggregator: 'sum';
  }> {
    const values: Sample[] = [];
    for (const series of this.#series.values()) {
      let cumulative = 0;
      for (let i = 0; i < this.bounds.length; i++) {
        cumulative += series.counts[i]!;
        values.push({
          metricName: `${this.name}_bucket`,
          labels: { le: this.bounds[i]!, ...series.labels },
          value: cumulative,
        });
      }
      values.push(
        { metricName: `${this.name}_bucket`, labels: { le: '+Inf', ...series.labels }, value: series.count },
        { metricName: `${this.name}_sum`, labels: { ...series.labels }, value: series.sum },
        { metricName: `${this.name}_count`, labels: { ...series.labels }, value: series.count },
      );
    }
    return { name: this.name, help: this.help, type: 'histogram', values, aggregator: 'sum' };
  }

  #key(labels: Readonly<Record<string, string>>): string {
    return this.labelNames.map((name) => labels[name] ?? '').join('\u0000');
  }
}

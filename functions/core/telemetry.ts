/**
 * The ports through which the domain reports what happened. Lambda functions back
 * them with Powertools (EMF metrics, JSON logs); the sandbox keeps metrics in
 * memory for its alarm evaluation. Dimensions must stay low-cardinality: never a
 * tenant, resource or webhook id.
 */

export interface MetricsPort {
  count(name: string, value?: number, dimensions?: Readonly<Record<string, string>>): void;
  /** A duration in seconds, one data point (an alarm on it takes the maximum); where a stage reports one. */
  seconds?(name: string, value: number): void;
}

export interface LoggerPort {
  info(message: string, fields?: Readonly<Record<string, unknown>>): void;
  warn(message: string, fields?: Readonly<Record<string, unknown>>): void;
  error(message: string, fields?: Readonly<Record<string, unknown>>): void;
}

export const NO_METRICS: MetricsPort = { count: () => {} };
export const NO_LOGS: LoggerPort = { info: () => {}, warn: () => {}, error: () => {} };

/**
 * Counts by key between a container's log lines about them, for lines written at most
 * once an interval per key (the first at once), in a memory of at most `memory` keys,
 * forgotten all at once when a new key finds it full: a line per occurrence would be a
 * flood of logs in the very flood it reports.
 */
export class LogTally {
  readonly #tallies = new Map<string, { loggedAt: number; counts: Record<string, number> }>();
  readonly #intervalMs: number;
  readonly #memory: number;

  constructor(intervalMs: number, memory = 10_000) {
    this.#intervalMs = intervalMs;
    this.#memory = memory;
  }

  /**
   * Adds `counts` to `key`'s. When a line about `key` is due now, answers every count
   * since its last line (and counts anew from here); otherwise undefined.
   */
  note(key: string, now: number, counts: Readonly<Record<string, number>> = {}): Record<string, number> | undefined {
    let tally = this.#tallies.get(key);
    if (!tally) {
      if (this.#tallies.size >= this.#memory) this.#tallies.clear();
      tally = { loggedAt: Number.NEGATIVE_INFINITY, counts: {} };
      this.#tallies.set(key, tally);
    }
    for (const [name, n] of Object.entries(counts)) tally.counts[name] = (tally.counts[name] ?? 0) + n;
    if (now - tally.loggedAt < this.#intervalMs) return undefined;
    const due = tally.counts;
    tally.loggedAt = now;
    tally.counts = {};
    return due;
  }
}

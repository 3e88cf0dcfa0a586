/**
 * Evaluates the alarm definitions of the sandbox's config against its metrics the
 * way CloudWatch does: per period, the statistic over the period's data points (the
 * sources added together), compared with the threshold; ALARM when
 * `datapointsToAlarm` of the last `evaluationPeriods` periods breach. `timeScale`
 * shrinks every period (tests use it to see a 5-minute alarm in seconds) but those of
 * the alarms that follow a schedule: the sandbox runs its schedules in real time.
 */
import type { SluiceConfig } from '../functions/core/config.ts';
import { type AlarmDefinition, type AlarmSeverity, alarmDefinitions } from '../functions/definitions/alarms.ts';
import { type InMemoryMetrics, sourceKey } from './metrics.ts';

export type AlarmStateValue = 'OK' | 'ALARM';

export interface AlarmState {
  readonly name: string;
  readonly title: string;
  /** Whom it calls: on-call at any hour (`page`) or in working hours (`ticket`). */
  readonly severity: AlarmSeverity;
  readonly state: AlarmStateValue;
  readonly since: string;
  readonly value: number | null;
  readonly threshold: number;
  readonly runbook: string;
}

export class AlarmEvaluator {
  readonly #metrics: InMemoryMetrics;
  readonly #alarms: readonly AlarmDefinition[];
  readonly #now: () => number;
  readonly #timeScale: number;
  readonly #states = new Map<string, { state: AlarmStateValue; since: number }>();
  readonly #startedAt: number;

  constructor(metrics: InMemoryMetrics, config: SluiceConfig, options: { now?: () => number; timeScale?: number } = {}) {
    this.#metrics = metrics;
    this.#alarms = alarmDefinitions(config);
    this.#now = options.now ?? Date.now;
    this.#timeScale = options.timeScale ?? 1;
    this.#startedAt = this.#now();
  }

  evaluate(): AlarmState[] {
    const now = this.#now();
    return this.#alarms.map((alarm) => {
      const { breaching, value, judged } = this.#assess(alarm, now);
      const previous = this.#states.get(alarm.name);
      // With no data at all, an alarm that ignores missing data keeps its state.
      const kept = !judged && alarm.missingData === 'ignore' ? this.#stateOfLastData(alarm, now, previous?.state) : undefined;
      const next: AlarmStateValue = kept ?? (breaching ? 'ALARM' : 'OK');
      if (!previous || previous.state !== next) this.#states.set(alarm.name, { state: next, since: now });
      const current = this.#states.get(alarm.name) as { state: AlarmStateValue; since: number };
      return {
        name: alarm.name,
        title: alarm.title,
        severity: alarm.severity,
        state: current.state,
        since: new Date(current.since).toISOString(),
        value,
        threshold: alarm.threshold,
        runbook: `docs/runbooks.md#${alarm.runbook}`,
      };
    });
  }

  /**
   * The state an alarm that ignores missing data kept when its last data went: CloudWatch
   * judges every minute, so it is what the last period that held data said; the sandbox
   * judges every 10 s (times its time scale) and when asked, and the state it last saw may be older than that data (a
   * reconciler's report of no object near its cap that came, and went out of the period,
   * between two looks) or there may be none (a report of one that nobody looked at in
   * its minute). Without data kept at all, the state stays as it was.
   */
  #stateOfLastData(alarm: AlarmDefinition, now: number, previous: AlarmStateValue | undefined): AlarmStateValue | undefined {
    const times = alarm.sources.map((source) => this.#metrics.latestBefore(sourceKey(source), now));
    const last = Math.max(...times.map((t) => t ?? Number.NEGATIVE_INFINITY));
    if (!Number.isFinite(last)) return previous;
    // The last period that held data ends a period after its last data point.
    return this.#assess(alarm, last + this.#periodMs(alarm)).breaching ? 'ALARM' : 'OK';
  }

  #periodMs(alarm: AlarmDefinition): number {
    return alarm.periodSeconds * 1000 * (alarm.schedule ? 1 : this.#timeScale);
  }

  /** `judged` is false when no period had data. */
  #assess(alarm: AlarmDefinition, now: number): { breaching: boolean; value: number | null; judged: boolean } {
    const period = this.#periodMs(alarm);
    let breaches = 0;
    let latest: number | null = null;
    let judged = false;
    for (let i = 0; i < alarm.evaluationPeriods; i++) {
      const to = now - i * period;
      const from = to - period;
      const value = this.#statistic(alarm, from, to);
      // A period reaching back before the sandbox started is judged on the data it
      // has; with none, it is not judged (it must not breach for "missing" data).
      if (from < this.#startedAt && value === null) continue;
      if (i === 0) latest = value;
      if (value !== null) judged = true;
      const breached =
        value === null
          ? alarm.missingData === 'breaching'
          : alarm.comparison === 'GreaterThanThreshold'
            ? value > alarm.threshold
            : value < alarm.threshold;
      if (breached) breaches++;
    }
    return { breaching: breaches >= alarm.datapointsToAlarm, value: latest, judged };
  }

  /** The statistic of the sources added together; null when none has a data point. */
  #statistic(alarm: AlarmDefinition, from: number, to: number): number | null {
    let total: number | null = null;
    for (const source of alarm.sources) {
      const points = this.#metrics.points(sourceKey(source), from, to);
      if (points.length === 0) continue;
      const value =
        alarm.statistic === 'Sum'
          ? points.reduce((a, b) => a + b, 0)
          : alarm.statistic === 'SampleCount'
            ? points.length
            : Math.max(...points);
      total = (total ?? 0) + value;
    }
    return total;
  }
}

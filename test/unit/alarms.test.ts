import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { buildConfig } from '../../functions/core/config.ts';
import { alarmDefinitions, alarmDescription, RECORD_FAILURE_METRICS } from '../../functions/definitions/alarms.ts';
import { FUNCTION_ENTRIES } from '../../functions/definitions/environment.ts';
import { DELIVER_QUEUE, DISTRIBUTE_QUEUE, type QueueDefinition } from '../../functions/definitions/queues.ts';
import { AlarmEvaluator } from '../../sandbox/alarms.ts';
import { InMemoryMetrics } from '../../sandbox/metrics.ts';

const runbooks = readFileSync('docs/runbooks.md', 'utf8');
const config = buildConfig();
const ALARMS = alarmDefinitions(config);

describe('alarm definitions', () => {
  it('cover every alarm SPEC §5 asks for, and each function’s errors and throttles', () => {
    const names = ALARMS.map((a) => a.name);
    for (const required of [
      'canary-stale',
      'distributor-backlog-age',
      'delivery-backlog-age',
      'events-rejected-or-dropped',
      'object-queue-near-cap',
      'dead-letters',
      'deliveries-dead-lettered',
      'webhook-disabled',
      'ingest-5xx',
    ]) {
      expect(names).toContain(required);
    }
    // The reconciler's heartbeat: its errors alarm cannot see a reconciler that does not run.
    expect(names).toContain('reconciler-stale');
    for (const fn of Object.keys(FUNCTION_ENTRIES)) {
      expect(names).toContain(`${fn}-errors`);
      expect(names).toContain(`${fn}-throttles`);
    }
    expect(new Set(names).size).toBe(names.length);
  });

  it('each name its runbook section, and the section exists', () => {
    for (const alarm of ALARMS) {
      expect(alarmDescription(alarm)).toContain(`docs/runbooks.md#${alarm.runbook}`);
      expect(runbooks).toMatch(new RegExp(`^## ${alarm.runbook}$`, 'm'));
      // Its section says whom it calls.
      expect(runbooks, alarm.name).toMatch(new RegExp(`^## ${alarm.runbook}\\n\\n\\*\\*Calls:\\*\\* a ${alarm.severity}\\b`, 'm'));
    }
  });
});

describe('sandbox alarm evaluation', () => {
  it('judges each period like CloudWatch: statistic, threshold, datapoints to alarm, missing data', () => {
    let now = 1_000_000;
    const metrics = new InMemoryMetrics(() => now);
    const evaluator = new AlarmEvaluator(metrics, config, { now: () => now });
    const state = (name: string) => evaluator.evaluate().find((a) => a.name === name);
    // Nothing is judged before the sandbox started.
    expect(state('canary-stale')?.state).toBe('OK');
    now += 300_000;
    // A whole period with no canary: missing data breaches.
    expect(state('canary-stale')).toMatchObject({ state: 'ALARM', value: null });
    metrics.count('CanaryDelivered');
    now += 1;
    expect(state('canary-stale')).toMatchObject({ state: 'OK', value: 1 });

    // 3 of 5 one-minute periods with errors are needed for a function alarm.
    for (let minute = 0; minute < 2; minute++) {
      metrics.record('function:delivery:Errors', 1);
      now += 60_000;
    }
    expect(state('delivery-errors')?.state).toBe('OK');
    metrics.record('function:delivery:Errors', 1);
    now += 1;
    expect(state('delivery-errors')?.state).toBe('ALARM');

    // Sources add up: rejected plus dropped over the threshold.
    metrics.count('EventsRejected', 600);
    metrics.count('EventsDropped', 500, { reason: 'retention' });
    now += 1;
    expect(state('events-rejected-or-dropped')).toMatchObject({ state: 'ALARM', value: 1_100 });
  });

  it("pages for events lost to retention, not for those on-call's own drop switch discards", () => {
    let now = 9_000_000;
    const metrics = new InMemoryMetrics(() => now);
    const evaluator = new AlarmEvaluator(metrics, config, { now: () => now });
    const state = () => evaluator.evaluate().find((a) => a.name === 'events-rejected-or-dropped');
    now += 60_000;
    // A runaway writer dropped at its full rate for 5 minutes.
    metrics.count('EventsDropped', 30_000, { reason: 'switch_drop' });
    now += 1;
    expect(state()?.state).toBe('OK');
    metrics.count('EventsDropped', 1_001, { reason: 'retention' });
    now += 1;
    expect(state()).toMatchObject({ state: 'ALARM', value: 1_001 });
  });

  it('pages for requests API Gateway throttled, whose events ingest never saw, as for rejected events', () => {
    let now = 8_000_000;
    const metrics = new InMemoryMetrics(() => now);
    const evaluator = new AlarmEvaluator(metrics, config, { now: () => now });
    const state = () => evaluator.evaluate().find((a) => a.name === 'events-rejected-or-dropped');
    now += 60_000;
    metrics.count('RequestsThrottled', 700);
    now += 1;
    expect(state()?.state).toBe('OK');
    metrics.count('EventsRejected', 200, { reason: 'rate_limited' });
    metrics.count('RequestsThrottled', 101);
    now += 1;
    expect(state()).toMatchObject({ state: 'ALARM', value: 1_001 });
  });

  it('pages for deliveries a full hold could not keep, and for endpoints sluice disabled, not for one its owner disabled', () => {
    let now = 7_000_000;
    const metrics = new InMemoryMetrics(() => now);
    const evaluator = new AlarmEvaluator(metrics, config, { now: () => now });
    const state = (name: string) => evaluator.evaluate().find((a) => a.name === name);
    now += 60_000;
    metrics.count('EventsHeldOverflow', 1_500);
    metrics.count('WebhooksDisabledByOwner');
    now += 1;
    expect(state('events-rejected-or-dropped')).toMatchObject({ state: 'ALARM', value: 1_500 });
    expect(state('webhook-disabled')?.state).toBe('OK');
    metrics.count('WebhooksDisabled', 1, { reason: 'gone' });
    now += 1;
    expect(state('webhook-disabled')?.state).toBe('ALARM');
  });

  it('pages for failed distributor and delivery records, which fail no invocation (a partial batch response): 3 of 5 minutes', () => {
    let now = 9_000_000;
    const metrics = new InMemoryMetrics(() => now);
    const evaluator = new AlarmEvaluator(metrics, config, { now: () => now });
    const state = (name: string) => evaluator.evaluate().find((a) => a.name === name)?.state;
    for (const [fn, metric] of Object.entries(RECORD_FAILURE_METRICS)) {
      for (let minute = 0; minute < 3; minute++) {
        now += 60_000;
        metrics.count(metric);
      }
      now += 1;
      expect(state(`${fn}-errors`)).toBe('ALARM');
    }
    expect(state('reconciler-errors')).toBe('OK');
  });

  // A record that fails at every receive comes back when its queue's visibility timeout
  // has passed (a partial batch response deletes nothing), a second or so later each
  // time (the poll that takes it, the failing try), until SQS dead-letters it. CloudWatch
  // judges one-minute periods on whole minutes: the alarm is looked at on each.
  const QUEUE_OF: Record<keyof typeof RECORD_FAILURE_METRICS, QueueDefinition> = {
    distributor: DISTRIBUTE_QUEUE,
    delivery: DELIVER_QUEUE,
  };
  for (const [fn, metric] of Object.entries(RECORD_FAILURE_METRICS) as Array<[keyof typeof RECORD_FAILURE_METRICS, string]>) {
    const queue = QUEUE_OF[fn];
    it(`pages for one ${fn} record that fails at every receive (back every ${queue.visibilityTimeoutSeconds} s), before SQS dead-letters it`, () => {
      for (let second = 0; second < 60; second += 7) {
        const start = 60_000_000;
        let now = start;
        const metrics = new InMemoryMetrics(() => now);
        const evaluator = new AlarmEvaluator(metrics, config, { now: () => now });
        const receives = Array.from(
          { length: queue.maxReceiveCount },
          (_, k) => start + second * 1000 + k * (queue.visibilityTimeoutSeconds + 1) * 1000,
        );
        let paged = false;
        for (let minute = 1; !paged && start + minute * 60_000 <= (receives.at(-1) as number) + 60_000; minute++) {
          for (const at of receives.filter((t) => t >= start + (minute - 1) * 60_000 && t < start + minute * 60_000)) {
            now = at;
            metrics.count(metric);
          }
          now = start + minute * 60_000;
          paged = evaluator.evaluate().find((a) => a.name === `${fn}-errors`)?.state === 'ALARM';
        }
        expect(paged, `first receive at second ${second} of its minute`).toBe(true);
      }
    });
  }

  it('keeps the near-cap alarm in its state between the reconciler reports it rests on, however far apart', () => {
    let now = 9_000_000;
    const metrics = new InMemoryMetrics(() => now);
    const evaluator = new AlarmEvaluator(metrics, config, { now: () => now });
    const state = () => evaluator.evaluate().find((a) => a.name === 'object-queue-near-cap')?.state;
    // A reconciler every 5 minutes: one report of an object near its cap.
    metrics.count('ObjectsNearCap', 1);
    now += 1;
    expect(state()).toBe('ALARM');
    // Minutes without a report: the alarm neither clears nor pages again.
    for (let minute = 1; minute < 5; minute++) {
      now += 60_000;
      expect(state(), `minute ${minute}`).toBe('ALARM');
    }
    // The next report says none is: it clears.
    metrics.count('ObjectsNearCap', 0);
    now += 1;
    expect(state()).toBe('OK');
    now += 120_000;
    expect(state()).toBe('OK');
  });

  it("keeps the near-cap alarm in the state of the reconciler's last report, though nobody asked in the minute after it", () => {
    // CloudWatch judges every minute; the sandbox judges when GET /v1/admin/alarms asks.
    let now = 9_500_000;
    const metrics = new InMemoryMetrics(() => now);
    const evaluator = new AlarmEvaluator(metrics, buildConfig({ reconcileIntervalSeconds: 300 }), { now: () => now });
    const state = () => evaluator.evaluate().find((a) => a.name === 'object-queue-near-cap')?.state;
    // A report of an object near its cap, first looked at two minutes later: it pages.
    metrics.count('ObjectsNearCap', 1);
    now += 120_000;
    expect(state()).toBe('ALARM');
    // The next report says none is; on-call looks two minutes after it: it has cleared.
    now += 180_000;
    metrics.count('ObjectsNearCap', 0);
    now += 120_000;
    expect(state()).toBe('OK');
  });

  it('alarms on what the first minutes of a sandbox hold, without judging the missing data before it started', () => {
    let now = 5_000_000;
    const metrics = new InMemoryMetrics(() => now);
    const evaluator = new AlarmEvaluator(metrics, config, { now: () => now });
    const state = (name: string) => evaluator.evaluate().find((a) => a.name === name);
    now += 20_000;
    metrics.count('EventsRejected', 5_000);
    now += 1;
    // 20 s into a 5-minute period: its data is already over the threshold.
    expect(state('events-rejected-or-dropped')).toMatchObject({ state: 'ALARM', value: 5_000 });
    expect(state('canary-stale')?.state).toBe('OK');
  });
});

describe('who an alarm calls: on-call for the platform, a ticket for what one tenant does', () => {
  /** A fresh evaluator a minute into its run; `paging` answers the alarms in ALARM that page, `ticketed` those that file a ticket. */
  function watch(overrides: Record<string, unknown> = {}) {
    let now = 20_000_000;
    const metrics = new InMemoryMetrics(() => now);
    const evaluator = new AlarmEvaluator(metrics, buildConfig(overrides), { now: () => now });
    now += 60_000;
    const firing = (severity: string) =>
      evaluator
        .evaluate()
        .filter((a) => a.state === 'ALARM' && a.severity === severity && a.name !== 'canary-stale' && a.name !== 'reconciler-stale')
        .map((a) => a.name);
    return {
      metrics,
      advance: (ms: number) => {
        now += ms;
      },
      paging: () => firing('page'),
      ticketed: () => firing('ticket'),
    };
  }

  it("files a ticket, and wakes nobody, for a customer's endpoint that answered 410 or stayed quarantined for 3 days", () => {
    const { metrics, advance, paging, ticketed } = watch();
    metrics.count('WebhooksDisabled', 1, { reason: 'gone' });
    metrics.count('WebhooksDisabled', 1, { reason: 'quarantine_expired' });
    advance(1);
    expect(ticketed()).toEqual(['webhook-disabled']);
    expect(paging()).toEqual([]);
  });

  it("files a ticket for a customer's delivery its endpoint refused through the whole retry schedule, and pages for a message in a dead-letter queue", () => {
    const { metrics, advance, paging, ticketed } = watch();
    // An endpoint that fails three answers in four, never five in a row: about a day on, its deliveries dead-letter.
    metrics.count('DeadLetters');
    advance(1);
    expect(ticketed()).toEqual(['deliveries-dead-lettered']);
    expect(paging()).toEqual([]);
    // A doorbell the distributor failed at every receive: sluice's own fault.
    metrics.record('queue:Distribute:dlq:ApproximateNumberOfMessagesVisible', 1);
    advance(1);
    expect(paging()).toEqual(['dead-letters']);
  });

  it("files a ticket for one tenant's app retrying past its object's rate or its own throttle, and pages for events refused for sluice's own failure", () => {
    const { metrics, advance, paging, ticketed } = watch();
    // A producer retrying at once on each 429, for five minutes: twice the object's rate.
    metrics.count('EventsRejected', 30_000, { reason: 'rate_limited' });
    metrics.count('EventsRejected', 5_000, { reason: 'queue_full' });
    metrics.count('RequestsThrottled', 1_500);
    advance(1);
    expect(ticketed()).toEqual(['events-rejected-or-dropped']);
    expect(paging()).toEqual([]);
    // Events a 202 refused as `internal` (storage failed): sluice's fault, as a 500 is.
    metrics.count('EventsRejected', 6, { reason: 'internal' });
    advance(1);
    expect(paging()).toEqual(['ingest-5xx']);
  });

  it("files a ticket for one tenant's endpoint whose deliveries are given times over 15 minutes ahead in each of 5 minutes, not for a slow moment of a minute or two", () => {
    const { metrics, advance, paging, ticketed } = watch();
    // A busy endpoint slow for half a minute: its deliveries booked far ahead for two
    // minutes, until its quick answers gave its time back.
    for (let minute = 0; minute < 2; minute++) {
      metrics.count('DeliveriesPacedFarAhead', 2_500);
      advance(60_000);
    }
    for (let minute = 0; minute < 4; minute++) {
      advance(60_000);
      expect(ticketed()).toEqual([]);
    }
    // 50 deliveries a second to an endpoint answering in 9 s, which stays slow: every
    // delivery from the 20th second on waits over 15 minutes, in every minute.
    for (let minute = 0; minute < 4; minute++) {
      metrics.count('DeliveriesPacedFarAhead', 3_000);
      advance(60_000);
      expect(ticketed()).toEqual([]);
    }
    metrics.count('DeliveriesPacedFarAhead', 3_000);
    advance(1);
    expect(ticketed()).toEqual(['endpoint-backlog-far-ahead']);
    expect(paging()).toEqual([]);
    // Paused by on-call, or quick again: no new far times, and it clears a minute on.
    advance(60_000);
    expect(ticketed()).toEqual([]);
  });

  it("files a ticket for one tenant's object past 80 % of its cap: a burst that drains a minute later, or an object on-call paused", () => {
    const { metrics, advance, paging, ticketed } = watch();
    // The reconciler's run finds the burst at its peak; the next, a minute on, finds it drained.
    metrics.count('ObjectsNearCap', 1);
    advance(1);
    expect(ticketed()).toEqual(['object-queue-near-cap']);
    expect(paging()).toEqual([]);
    advance(60_000);
    metrics.count('ObjectsNearCap', 0);
    advance(1);
    expect(ticketed()).toEqual([]);
  });
});

describe('the scheduled functions’ alarms, at every interval the config allows', () => {
  /** Runs a scheduled function every `interval` s for `hours`, 30 s into each interval; answers every state each alarm took. */
  function everyRun(overrides: Record<string, unknown>, interval: number, run: (metrics: InMemoryMetrics) => void, hours = 2) {
    let now = 1_000_000;
    const metrics = new InMemoryMetrics(() => now);
    const evaluator = new AlarmEvaluator(metrics, buildConfig(overrides), { now: () => now });
    const states = new Set<string>();
    for (let t = 0; t < hours * 3_600; t += 10) {
      now = 1_000_000 + t * 1000;
      if (t % interval === 30) run(metrics);
      for (const a of evaluator.evaluate()) states.add(`${a.name}=${a.state}`);
    }
    return [...states];
  }

  for (const interval of [60, 120, 180, 240, 300, 600, 3_600]) {
    it(`pages for a reconciler that fails every run, every ${interval} s, and not for one that reports every run`, () => {
      const failing = everyRun({ reconcileIntervalSeconds: interval }, interval, (m) => m.record('function:reconciler:Errors', 1), 3);
      expect(failing).toContain('reconciler-errors=ALARM');
      const throttled = everyRun({ reconcileIntervalSeconds: interval }, interval, (m) => m.record('function:reconciler:Throttles', 1), 3);
      expect(throttled).toContain('reconciler-throttles=ALARM');
      // A sweep that went through (0 objects listed is a report too): none of its alarms pages.
      const fine = everyRun({ reconcileIntervalSeconds: interval }, interval, (m) => m.count('ScheduledObjects', 0), 3);
      expect(fine.filter((s) => s.startsWith('reconciler-') && s.endsWith('=ALARM'))).toEqual([]);
    });
  }

  for (const interval of [60, 120]) {
    it(`does not page canary-stale for a canary whose latency changes by up to (300 - ${interval}) s from one run to the next`, () => {
      let now = 1_000_000;
      const metrics = new InMemoryMetrics(() => now);
      const evaluator = new AlarmEvaluator(metrics, buildConfig({ canaryIntervalSeconds: interval }), { now: () => now });
      // Each run's two ticks delivered 5 s after it for ten runs, then (300 - interval - 10) s
      // after it for ten: at each step up, 285 s pass between two deliveries.
      const late = 300 - interval - 10;
      const deliveries = new Map<number, number>();
      for (let run = 0; run * interval < 7_200; run++) {
        const at = run * interval + (Math.floor(run / 10) % 2 === 1 ? late : 5);
        deliveries.set(at - (at % 5), 2);
      }
      const states = new Set<string>();
      for (let t = 0; t < 7_200; t += 5) {
        now = 1_000_000 + t * 1000;
        const delivered = deliveries.get(t);
        if (delivered) metrics.count('CanaryDelivered', delivered);
        if (t >= 300) for (const a of evaluator.evaluate()) if (a.name === 'canary-stale') states.add(a.state);
      }
      expect([...states]).toEqual(['OK']);
    });

    it(`pages for a canary that fails every run, every ${interval} s`, () => {
      const states = everyRun({ canaryIntervalSeconds: interval }, interval, (m) => m.record('function:canary:Errors', 1));
      expect(states).toContain('canary-errors=ALARM');
    });
  }

  it('keeps 3 of the last 5 minutes at the default interval: two failed runs do not page', () => {
    let now = 2_000_000;
    const metrics = new InMemoryMetrics(() => now);
    const evaluator = new AlarmEvaluator(metrics, config, { now: () => now });
    const state = () => evaluator.evaluate().find((a) => a.name === 'reconciler-errors')?.state;
    for (const minute of [0, 1, 2, 3, 4]) {
      now = 2_000_000 + minute * 60_000 + 30_000;
      if (minute === 1 || minute === 3) metrics.record('function:reconciler:Errors', 1);
      expect(state(), `minute ${minute}`).toBe('OK');
    }
  });

  it('pages when the reconciler stops reporting (its schedule disabled) for 3 intervals, and clears at its next report', () => {
    for (const interval of [60, 300]) {
      let now = 3_000_000;
      const metrics = new InMemoryMetrics(() => now);
      const evaluator = new AlarmEvaluator(metrics, buildConfig({ reconcileIntervalSeconds: interval }), { now: () => now });
      const state = () => evaluator.evaluate().find((a) => a.name === 'reconciler-stale')?.state;
      // An hour of runs, one a little slower than the next now and then, and one lost.
      for (let run = 1; run <= 3_600 / interval; run++) {
        now = 3_000_000 + run * interval * 1000 + (run % 3) * 20_000;
        if (run !== 5) metrics.count('ScheduledObjects', 0);
        expect(state(), `${interval} s, run ${run}`).toBe('OK');
        now += interval * 1000 - 1;
        expect(state(), `${interval} s, before run ${run + 1}`).toBe('OK');
      }
      // The schedule is disabled: no run reports.
      const lastReport = now;
      while (state() === 'OK') now += 10_000;
      expect((now - lastReport) / 1000, `${interval} s`).toBeGreaterThan(2 * interval);
      expect((now - lastReport) / 1000, `${interval} s`).toBeLessThanOrEqual(4 * interval);
      metrics.count('ScheduledObjects', 3);
      now += 1;
      expect(state()).toBe('OK');
    }
  });

  it("leaves the scheduled functions' periods as they are under the sandbox's time scale: its schedules run in real time", () => {
    let now = 4_000_000;
    const metrics = new InMemoryMetrics(() => now);
    // 100 times faster: canary-stale looks at the last 3 s; the reconciler still runs once a minute.
    const evaluator = new AlarmEvaluator(metrics, config, { now: () => now, timeScale: 0.01 });
    const state = (name: string) => evaluator.evaluate().find((a) => a.name === name)?.state;
    for (let minute = 1; minute <= 10; minute++) {
      now = 4_000_000 + minute * 60_000;
      metrics.count('ScheduledObjects', 0);
      metrics.count('CanaryDelivered');
      now += 59_000;
      expect(state('reconciler-stale'), `minute ${minute}`).toBe('OK');
      expect(state('canary-stale'), `minute ${minute}`).toBe('ALARM');
    }
  });
});

describe('sandbox metrics', () => {
  it('answers the points of one source within a time range, whatever else was recorded', () => {
    let now = 10_000;
    const metrics = new InMemoryMetrics(() => now);
    for (let i = 0; i < 2_500; i++) {
      metrics.record('queue:Deliver:ApproximateAgeOfOldestMessage', i);
      metrics.count('EventsAccepted', 2);
      now += 10;
    }
    expect(metrics.points('sluice:EventsAccepted', 10_000, 10_050)).toEqual([2, 2, 2, 2, 2]);
    expect(metrics.points('queue:Deliver:ApproximateAgeOfOldestMessage', 10_100, 10_130)).toEqual([10, 11, 12]);
    expect(metrics.points('sluice:Nothing', 0, now)).toEqual([]);
    // A clock moved back (as tests do) still finds its points.
    now = 5_000;
    metrics.record('sluice:ApiServerErrors', 1);
    now = 40_000;
    metrics.record('sluice:ApiServerErrors', 2);
    expect(metrics.points('sluice:ApiServerErrors', 0, 10_000)).toEqual([1]);
    expect(metrics.total('EventsAccepted')).toBe(5_000);
  });
});

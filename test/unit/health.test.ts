import { describe, expect, it } from 'vitest';
import {
  deliversTo,
  type Health,
  type HealthEvent,
  INITIAL_HEALTH,
  nextHealth,
  startsRelease,
  TROUBLE_RESUMES_WITHIN_MS,
} from '../../functions/core/health.ts';

const policy = {
  quarantineAfterFailures: 3,
  probeIntervalMinSeconds: 60,
  probeIntervalMaxSeconds: 300,
  disableAfterQuarantineSeconds: 3_600,
};
const T = 1_000_000;
const fail = (now = T): HealthEvent => ({ type: 'failure', now, statusCode: 500, error: 'HTTP 500' });

function run(events: HealthEvent[], from: Health = INITIAL_HEALTH, under = policy): Health {
  return events.reduce((h, e) => nextHealth(h, e, under), from);
}

describe('endpoint health', () => {
  it('healthy → failing on a failure, and back to healthy on a success', () => {
    const failing = run([fail()]);
    expect(failing).toMatchObject({ state: 'failing', consecutiveFailures: 1, lastFailure: { status_code: 500, error: 'HTTP 500' } });
    expect(deliversTo(failing)).toBe(true);
    const healed = run([{ type: 'success', now: T + 1 }], failing);
    expect(healed).toMatchObject({ state: 'healthy', consecutiveFailures: 0, lastSuccessAt: new Date(T + 1).toISOString() });
    expect(healed.lastFailure).toEqual(failing.lastFailure);
  });

  it('failing → quarantined after N consecutive failures, with the first probe one minimum interval later', () => {
    const q = run([fail(), fail(), fail(T + 5)]);
    expect(q).toMatchObject({
      state: 'quarantined',
      consecutiveFailures: 3,
      quarantinedAt: T + 5,
      probeIntervalSeconds: 60,
      nextProbeAt: T + 5 + 60_000,
    });
    expect(deliversTo(q)).toBe(false);
  });

  it('quarantined: failed probes double the interval up to the maximum', () => {
    let h = run([fail(), fail(), fail()]);
    const intervals: number[] = [];
    for (let i = 1; i <= 4; i++) {
      h = nextHealth(h, { type: 'probe_failed', now: T + i * 1_000, statusCode: undefined, error: 'timeout' }, policy);
      intervals.push(h.probeIntervalSeconds as number);
    }
    expect(intervals).toEqual([120, 240, 300, 300]);
    expect(h.state).toBe('quarantined');
    expect(h.nextProbeAt).toBe(T + 4_000 + 300_000);
  });

  it('quarantined → healthy on a successful probe', () => {
    const h = run([fail(), fail(), fail(), { type: 'probe_succeeded', now: T + 10 }]);
    expect(h).toMatchObject({ state: 'healthy', consecutiveFailures: 0, quarantinedAt: undefined, nextProbeAt: undefined });
  });

  it('quarantined → disabled once a probe fails after the quarantine limit', () => {
    const h = run([fail(), fail(), fail(T), { type: 'probe_failed', now: T + 3_600_000, statusCode: 503, error: 'HTTP 503' }]);
    expect(h).toMatchObject({ state: 'disabled', disabledReason: 'quarantine_expired' });
  });

  it('disables at once on 410 from any state', () => {
    for (const from of [INITIAL_HEALTH, run([fail()]), run([fail(), fail(), fail()])]) {
      expect(nextHealth(from, { type: 'gone', now: T, statusCode: 410 }, policy)).toMatchObject({
        state: 'disabled',
        disabledReason: 'gone',
        // As the attempt's error and every other failure's: the reason says "gone".
        lastFailure: { status_code: 410, error: 'HTTP 410' },
      });
    }
  });

  it('re-enabling returns a disabled or quarantined endpoint to healthy', () => {
    const gone = nextHealth(INITIAL_HEALTH, { type: 'gone', now: T, statusCode: 410 }, policy);
    expect(nextHealth(gone, { type: 'reenabled', now: T }, policy)).toMatchObject({ state: 'healthy', consecutiveFailures: 0 });
    expect(nextHealth(run([fail(), fail(), fail()]), { type: 'reenabled', now: T }, policy).state).toBe('healthy');
  });

  it('ignores deliveries’ results while quarantined or disabled (only probes count)', () => {
    const q = run([fail(), fail(), fail()]);
    expect(nextHealth(q, fail(T + 1), policy)).toBe(q);
    expect(nextHealth(q, { type: 'success', now: T + 1 }, policy)).toBe(q);
    const off = nextHealth(INITIAL_HEALTH, { type: 'disabled_by_owner', now: T }, policy);
    expect(off.state).toBe('disabled');
    expect(nextHealth(off, { type: 'probe_succeeded', now: T }, policy)).toBe(off);
  });
});

describe('an endpoint whose probes succeed but whose deliveries fail (quarantined again and again)', () => {
  const probeOk = (now: number): HealthEvent => ({ type: 'probe_succeeded', now });
  const quarantineAt = (now: number, from: Health) => run([fail(now), fail(now), fail(now)], from);

  it('keeps when its trouble began across quarantines, and its probes double from where the last quarantine left them', () => {
    let h = quarantineAt(T, INITIAL_HEALTH);
    h = run([{ type: 'probe_failed', now: T + 60_000, statusCode: 500, error: 'HTTP 500' }], h); // its probes now 120 s apart
    h = run([probeOk(T + 180_000)], h);
    expect(h).toMatchObject({ state: 'healthy', troubleSince: T, troubleProbeSeconds: 120, quarantinedAt: undefined });
    expect(deliversTo(h)).toBe(true);
    h = quarantineAt(T + 200_000, h);
    expect(h).toMatchObject({ state: 'quarantined', quarantinedAt: T + 200_000, troubleSince: T, probeIntervalSeconds: 240 });
    h = quarantineAt(T + 500_000, run([probeOk(T + 440_000)], h));
    // Doubled up to the maximum, and no further.
    expect(h).toMatchObject({ troubleSince: T, probeIntervalSeconds: 300 });
  });

  it('is disabled by the failure that quarantines it again once its trouble is older than the limit', () => {
    let h = quarantineAt(T, INITIAL_HEALTH);
    h = quarantineAt(T + 3_599_000, run([probeOk(T + 3_000_000)], h));
    expect(h.state).toBe('quarantined');
    h = quarantineAt(T + 3_600_000, run([probeOk(T + 3_599_500)], h));
    expect(h).toMatchObject({ state: 'disabled', disabledReason: 'quarantine_expired', troubleSince: undefined });
  });

  it('quarantines (and probes) on a first quarantine even with no time allowed in quarantine: its probe decides', () => {
    const h = run([fail(), fail(), fail()], INITIAL_HEALTH, { ...policy, disableAfterQuarantineSeconds: 0 });
    expect(h).toMatchObject({ state: 'quarantined', troubleSince: T });
  });

  it('starts afresh a quarantine that comes a day or more after the probe that ended the last one (too little traffic to tell)', () => {
    // Three days in quarantine before a disable, as deployed.
    const patient = { ...policy, disableAfterQuarantineSeconds: 3 * 86_400 };
    const apply = (events: HealthEvent[], from: Health) => run(events, from, patient);
    const recoveredAt = T + 60_000;
    const h = apply([probeOk(recoveredAt)], apply([fail(T), fail(T), fail(T)], INITIAL_HEALTH));
    const later = recoveredAt + TROUBLE_RESUMES_WITHIN_MS;
    expect(apply([fail(later), fail(later), fail(later)], h)).toMatchObject({
      state: 'quarantined',
      troubleSince: later,
      probeIntervalSeconds: 60,
    });
    expect(apply([fail(later - 1), fail(later - 1), fail(later - 1)], h)).toMatchObject({
      state: 'quarantined',
      troubleSince: T,
      probeIntervalSeconds: 120,
    });
  });

  it('counts a failed probe past the limit from when its trouble began, not from the last quarantine', () => {
    let h = quarantineAt(T, INITIAL_HEALTH);
    h = quarantineAt(T + 3_000_000, run([probeOk(T + 60_000)], h));
    h = run([{ type: 'probe_failed', now: T + 3_600_000, statusCode: 503, error: 'HTTP 503' }], h);
    expect(h).toMatchObject({ state: 'disabled', disabledReason: 'quarantine_expired' });
  });

  it('ends its trouble at a delivery’s success: its next quarantine starts the clock and the probes afresh', () => {
    let h = quarantineAt(T, INITIAL_HEALTH);
    h = run([probeOk(T + 60_000), { type: 'success', now: T + 61_000 }], h);
    expect(h.troubleSince).toBeUndefined();
    expect(h.troubleProbeSeconds).toBeUndefined();
    h = quarantineAt(T + 3_700_000, h);
    expect(h).toMatchObject({ state: 'quarantined', troubleSince: T + 3_700_000, probeIntervalSeconds: 60 });
  });
});

describe('what starts a release of held deliveries', () => {
  const quarantined = run([fail(), fail(), fail()]);
  const disabled = run([{ type: 'disabled_by_owner', now: T }]);
  const failing = run([fail()]);
  const moves = (from: Health, event: HealthEvent, held: number) => startsRelease(from, nextHealth(from, event, policy), event, held);

  it('starts one when a probe succeeds, or a webhook is re-enabled, whatever it holds (overflow counts owe markers too)', () => {
    expect(moves(quarantined, { type: 'probe_succeeded', now: T }, 0)).toBe(true);
    expect(moves(disabled, { type: 'reenabled', now: T }, 0)).toBe(true);
    expect(moves(quarantined, { type: 'reenabled', now: T }, 3)).toBe(true);
    expect(moves(INITIAL_HEALTH, { type: 'reenabled', now: T }, 3)).toBe(true);
  });

  it('starts none when a success ends failing, though deliveries are held: that success is a release step’s, whose chain goes on', () => {
    expect(moves(failing, { type: 'success', now: T }, 3)).toBe(false);
    expect(moves(INITIAL_HEALTH, { type: 'success', now: T }, 3)).toBe(false);
    expect(moves(failing, { type: 'success', now: T }, 0)).toBe(false);
  });

  it('starts none on a transition that does not end healthy', () => {
    expect(moves(failing, fail(), 3)).toBe(false);
    expect(moves(quarantined, { type: 'probe_failed', now: T, statusCode: 500, error: 'HTTP 500' }, 3)).toBe(false);
    expect(moves(INITIAL_HEALTH, { type: 'disabled_by_owner', now: T }, 3)).toBe(false);
  });
});

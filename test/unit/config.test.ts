import { describe, expect, it } from 'vitest';
import { retryDelaySeconds } from '../../functions/core/backoff.ts';
import {
  buildConfig,
  configFromEnvironment,
  DEFAULT_CONFIG,
  overridesFromEnv,
  problemsReading,
  RETRY_SCHEDULE_MAX_ATTEMPTS,
  withProblems,
} from '../../functions/core/config.ts';
import { ConfigError } from '../../functions/core/errors.ts';

describe('config', () => {
  it('has the defaults of SPEC §4', () => {
    const c = buildConfig();
    expect(c).toMatchObject({
      objectRatePerSecond: 100,
      objectBurst: 200,
      objectQueueCap: 10_000,
      tenantRatePerSecond: 500,
      tenantBurst: 1_000,
      maxWebhooksPerTenant: 100,
      turnMaxEvents: 500,
      turnMaxMs: 2_000,
      leaseMs: 30_000,
      deliveryTimeoutMs: 10_000,
      retryJitter: 0.2,
      quarantineAfterFailures: 5,
      probeIntervalMinSeconds: 60,
      probeIntervalMaxSeconds: 3_600,
      disableAfterQuarantineSeconds: 259_200,
      heldPerWebhook: 10_000,
      retentionDays: 7,
      endpointRatePerSecond: 50,
      allowPrivateTargets: false,
    });
    expect(c.retryScheduleSeconds).toEqual([0, 5, 300, 1_800, 7_200, 18_000, 36_000, 36_000]);
  });

  it('applies overrides and freezes the result', () => {
    const c = buildConfig({ objectQueueCap: 50, allowPrivateTargets: true });
    expect(c.objectQueueCap).toBe(50);
    expect(c.allowPrivateTargets).toBe(true);
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.retryScheduleSeconds)).toBe(true);
    expect(Object.isFrozen(DEFAULT_CONFIG)).toBe(true);
  });

  it('reports every problem at once', () => {
    try {
      buildConfig({ objectQueueCap: 0, retryJitter: 2, colour: 'blue', retryScheduleSeconds: [] });
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      const problems = (error as ConfigError).problems;
      expect(problems).toHaveLength(4);
      expect(problems.join('\n')).toMatch(/colour is not a setting/);
      expect(problems.join('\n')).toMatch(/objectQueueCap must be an integer/);
    }
  });

  it('lists the problems met reading the overrides first, with the settings’ own, and nothing else of them', () => {
    const read = withProblems(withProblems({ objectQueueCap: 0 }, ['PORT must be a port number']), ['SLUICE_ADMIN_KEY must be ak_…']);
    expect(read).toEqual({ objectQueueCap: 0 });
    expect(problemsReading(read)).toEqual(['PORT must be a port number', 'SLUICE_ADMIN_KEY must be ak_…']);
    try {
      buildConfig(read);
      expect.unreachable();
    } catch (error) {
      expect((error as ConfigError).problems).toEqual([
        'PORT must be a port number',
        'SLUICE_ADMIN_KEY must be ak_…',
        'objectQueueCap must be an integer from 1 to 10000000',
      ]);
    }
    // Settings that pass are still checked against each other with a reading problem beside them.
    expect(() => buildConfig(withProblems({ leaseMs: 1_000 }, ['PORT must be a port number']))).toThrow(
      /(?=.*PORT)(?=.*leaseMs must be greater)/,
    );
    expect(() => buildConfig(withProblems({}, []))).not.toThrow();
  });

  it('refuses names that only an object’s prototype has, from cdk.json context as from anywhere (JSON keeps __proto__ as a key)', () => {
    for (const name of ['constructor', 'toString', 'hasOwnProperty', '__proto__']) {
      const overrides = JSON.parse(`{"${name}": {"allowPrivateTargets": true}}`) as Record<string, unknown>;
      expect(() => buildConfig(overrides), name).toThrow(new RegExp(`${name} is not a setting`));
    }
  });

  it('refuses a retry schedule whose first entry is not 0: that entry is the first attempt, which always goes at once', () => {
    // The delivery stage's waits after each failed attempt: the schedule's later entries, then none (dead letter).
    const waits = (scheduleSeconds: readonly number[]) =>
      Array.from({ length: scheduleSeconds.length }, (_, n) =>
        retryDelaySeconds({ scheduleSeconds, jitter: 0 }, n + 1, { kind: 'status' }, Date.now()),
      );
    const { retryScheduleSeconds } = buildConfig({ retryScheduleSeconds: [0, 60, 300, 3_600] });
    expect(waits(retryScheduleSeconds)).toEqual([60, 300, 3_600, undefined]);
    // [60, 300, 3600] would be 3 attempts, the 60 never waited; [3600], one attempt and no retry.
    for (const retryScheduleSeconds of [[60, 300, 3_600], [3_600]]) {
      expect(() => buildConfig({ retryScheduleSeconds }), String(retryScheduleSeconds)).toThrow(
        /retryScheduleSeconds must start with 0: the first entry is the first attempt, which always goes at once, and each later entry is the wait in seconds before the next retry/,
      );
    }
  });

  it('bounds the retry schedule: at most 100 attempts, no wait longer than the retention period', () => {
    const attempts = (n: number, wait = 36_000) => [0, ...Array.from({ length: n - 1 }, () => wait)];
    expect(RETRY_SCHEDULE_MAX_ATTEMPTS).toBe(100);
    expect(buildConfig({ retryScheduleSeconds: attempts(100) }).retryScheduleSeconds).toHaveLength(100);
    expect(() => buildConfig({ retryScheduleSeconds: attempts(101) })).toThrow(
      /retryScheduleSeconds must have at most 100 entries \(attempts\), not 101/,
    );
    // The 700 entries that once passed synth and made SLUICE_CONFIG too big to deploy.
    expect(() => buildConfig({ retryScheduleSeconds: attempts(700) })).toThrow(/at most 100 entries/);
    // Waits up to the retention period (7 days by default), and longer with a longer retention.
    expect(() => buildConfig({ retryScheduleSeconds: [0, 7 * 86_400] })).not.toThrow();
    expect(() => buildConfig({ retryScheduleSeconds: [0, 7 * 86_400 + 1] })).toThrow(
      /retryScheduleSeconds must wait at most the retention period before a retry \(retentionDays × 86400 = 604800 s\)/,
    );
    expect(() => buildConfig({ retryScheduleSeconds: [0, 7 * 86_400 + 1], retentionDays: 8 })).not.toThrow();
  });

  it('checks relations between settings', () => {
    expect(() => buildConfig({ objectRatePerSecond: 300, objectBurst: 100 })).toThrow(/objectBurst/);
    expect(() => buildConfig({ leaseMs: 1_000 })).toThrow(/leaseMs/);
  });

  it('checks relations between settings that pass beside a setting that does not, in one go', () => {
    // A deployer who fixed objectQueueCap would otherwise meet the other four at the next synth.
    try {
      buildConfig({
        objectQueueCap: -1,
        objectRatePerSecond: 300,
        objectBurst: 100,
        leaseMs: 1_000,
        probeIntervalMinSeconds: 600,
        probeIntervalMaxSeconds: 60,
        retryScheduleSeconds: [0, 8 * 86_400],
      });
      expect.unreachable();
    } catch (error) {
      expect((error as ConfigError).problems).toEqual([
        'objectQueueCap must be an integer from 1 to 10000000',
        'objectBurst must be ≥ objectRatePerSecond',
        'probeIntervalMaxSeconds must be ≥ probeIntervalMinSeconds',
        'leaseMs must be greater than turnMaxMs',
        'retryScheduleSeconds must wait at most the retention period before a retry (retentionDays × 86400 = 604800 s)',
      ]);
    }
    // A relation with a setting that fails its own rule is not judged: its own problem says it.
    expect(() => buildConfig({ objectRatePerSecond: 200_000, objectBurst: 150_000 })).toThrow(
      /^(?!.*objectBurst must be).*objectRatePerSecond must be an integer/s,
    );
  });

  it("bounds a tenant's default rate by what its burst may be (5,000, API Gateway's burst), as the burst must be at least the rate", () => {
    expect(buildConfig({ tenantRatePerSecond: 5_000, tenantBurst: 5_000 }).tenantRatePerSecond).toBe(5_000);
    expect(() => buildConfig({ tenantRatePerSecond: 6_000, tenantBurst: 5_000 })).toThrow(
      /tenantRatePerSecond must be an integer from 1 to 5000/,
    );
  });

  it('keeps the canary interval within the canary-stale alarm period (a tick in every 5 minutes)', () => {
    expect(buildConfig({ canaryIntervalSeconds: 120 }).canaryIntervalSeconds).toBe(120);
    expect(() => buildConfig({ canaryIntervalSeconds: 121 })).toThrow(/canaryIntervalSeconds/);
  });

  it("keeps a turn and a release step inside their functions' timeouts (20 s and 30 s), with 5 s to spare", () => {
    // Two doorbells of one object in a batch run two turns, one after the other.
    expect(buildConfig({ turnMaxMs: 7_500, leaseMs: 30_000 }).turnMaxMs).toBe(7_500);
    expect(() => buildConfig({ turnMaxMs: 7_501, leaseMs: 30_000 })).toThrow(/turnMaxMs/);
    expect(() => buildConfig({ sharedTurnMaxMs: 7_501 })).toThrow(/sharedTurnMaxMs/);
    // A release step may start a POST just before deliveryTimeoutMs and wait as long again for it.
    expect(buildConfig({ deliveryTimeoutMs: 12_500 }).deliveryTimeoutMs).toBe(12_500);
    expect(() => buildConfig({ deliveryTimeoutMs: 12_501 })).toThrow(/deliveryTimeoutMs/);
  });

  it('reads SLUICE_* variables, JSON where they parse', () => {
    const overrides = overridesFromEnv({ SLUICE_OBJECT_QUEUE_CAP: '500', SLUICE_ALLOW_PRIVATE_TARGETS: 'true', OTHER: '1' });
    expect(overrides).toEqual({ objectQueueCap: 500, allowPrivateTargets: true });
  });

  it('reads a list from a SLUICE_* variable as JSON, and says so to one written otherwise', () => {
    expect(buildConfig(overridesFromEnv({ SLUICE_RETRY_SCHEDULE_SECONDS: '[0,5,300]' })).retryScheduleSeconds).toEqual([0, 5, 300]);
    for (const written of ['0,5,300', '0 5 300', '5']) {
      expect(() => buildConfig(overridesFromEnv({ SLUICE_RETRY_SCHEDULE_SECONDS: written })), written).toThrow(
        /retryScheduleSeconds must be a non-empty list of whole seconds ≥ 0, written as JSON: \[0,5,300\] \(SLUICE_RETRY_SCHEDULE_SECONDS='\[0,5,300\]' in the sandbox\)/,
      );
    }
  });

  it('says a value that should be a number or a list was given as a string, which a setting in range otherwise looks like', () => {
    // `.2` and `+5000` are not JSON: the variable arrives as that string, and "must be a
    // number in [0, 1)" read as if 0.2 were out of range. So does "5000" in cdk.json.
    expect(() => buildConfig(overridesFromEnv({ SLUICE_RETRY_JITTER: '.2' }))).toThrow(
      /retryJitter must be a number in \[0, 1\), not the string "\.2"/,
    );
    expect(() => buildConfig(overridesFromEnv({ SLUICE_OBJECT_QUEUE_CAP: '+5000' }))).toThrow(
      /objectQueueCap must be .*, not the string "\+5000"/,
    );
    expect(() => buildConfig({ objectQueueCap: '5000' })).toThrow(/objectQueueCap must be .*, not the string "5000"/);
    // A number out of range is said as before.
    expect(() => buildConfig({ objectQueueCap: 0 })).toThrow(/objectQueueCap must be an integer from 1 to 10000000$/);
  });

  it('refuses a SLUICE_* variable that names no setting, with the other problems, and leaves the sandbox its own', () => {
    const env = { SLUICE_OBJECT_QUEUE_CAPS: '5', SLUICE_OBJECT_BURST: 'abc', SLUICE_ADMIN_KEY: 'ak_x', SLUICE_DATA_DIR: '/tmp/d' };
    expect(() => buildConfig(overridesFromEnv(env))).toThrow(/(?=.*SLUICE_OBJECT_QUEUE_CAPS is not a setting)(?=.*objectBurst)/);
    expect(() => buildConfig(overridesFromEnv({ SLUICE_ADMIN_KEY: 'ak_x', SLUICE_DATA_DIR: '/tmp/d' }))).not.toThrow();
  });

  it('round-trips through the SLUICE_CONFIG variable a function is deployed with', () => {
    const c = buildConfig({ turnMaxEvents: 42 });
    expect(configFromEnvironment({ SLUICE_CONFIG: JSON.stringify(c) })).toEqual(c);
    expect(() => configFromEnvironment({})).toThrow(/SLUICE_CONFIG/);
  });

  it('starts on a SLUICE_CONFIG of another version of the stack: a setting this code does not know is left out', () => {
    // CloudFormation updates a function's code and its environment in two steps, and a
    // cold start between them (or during the rollback of a failed deploy) runs one
    // version's code with the other's SLUICE_CONFIG: a setting added (or removed) by one
    // of them must not keep the function from starting.
    const written = { ...buildConfig({ turnMaxEvents: 42 }), settingOfAnotherVersion: 7 };
    expect(configFromEnvironment({ SLUICE_CONFIG: JSON.stringify(written) })).toEqual(buildConfig({ turnMaxEvents: 42 }));
    // A known setting is still checked: synth checked it, and a bad value is not a version's.
    expect(() => configFromEnvironment({ SLUICE_CONFIG: JSON.stringify({ turnMaxEvents: 0 }) })).toThrow(/turnMaxEvents/);
  });
});

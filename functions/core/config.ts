/**
 * The one configuration of sluice. The CDK stack, every Lambda function and the
 * sandbox build their settings here, from the defaults of SPEC §4 plus overrides
 * (cdk.json context `sluice`, or SLUICE_* environment variables in the sandbox).
 * Every violation is reported at once, and the result is frozen.
 */

import { API_TIMEOUT_SECONDS } from '../definitions/environment.ts';
import { DELIVER_QUEUE, DISTRIBUTE_QUEUE } from '../definitions/queues.ts';
import { ConfigError } from './errors.ts';

export interface SluiceConfig {
  /** Sustained events per second one object (tenant + resource) may be written at. */
  readonly objectRatePerSecond: number;
  /** Events one object may be written in a burst above its rate. */
  readonly objectBurst: number;
  /** Most events that may wait in one object's queue. */
  readonly objectQueueCap: number;
  /** Default per-tenant API throttle (usage plan), requests per second. */
  readonly tenantRatePerSecond: number;
  /** Default per-tenant API burst (usage plan). */
  readonly tenantBurst: number;
  /** Default most webhooks one tenant may have. */
  readonly maxWebhooksPerTenant: number;
  /** Most events one distributor turn drains before it re-rings the doorbell. */
  readonly turnMaxEvents: number;
  /** Longest a distributor turn runs before it re-rings the doorbell. */
  readonly turnMaxMs: number;
  /**
   * Longest a turn runs when other objects' doorbells came in the same batch: their
   * FIFO groups stay blocked until the whole invocation returns.
   */
  readonly sharedTurnMaxMs: number;
  /** How long an object's lease is valid after it is taken. */
  readonly leaseMs: number;
  /**
   * Objects one tenant may ring in one second, in one container, before its doorbells
   * go to the bulk lane (core/lanes.ts), so that its flood of new objects waits behind
   * itself, not in front of every other tenant's doorbells.
   */
  readonly bulkLaneAfterRingsPerSecond: number;
  /** How long an ingest may take between reserving a slot and writing its event. */
  readonly ingestGraceMs: number;
  /** How often the reconciler runs (a schedule in AWS, a timer in the sandbox). */
  readonly reconcileIntervalSeconds: number;
  /** A scheduled object with no lease and no turn for this long has lost its doorbell: ring again. */
  readonly stuckAfterMs: number;
  /** How stale a stage's view of the kill switches may be (≤ 10 s). */
  readonly switchCacheMs: number;
  /** How often the canary publishes its synthetic event. */
  readonly canaryIntervalSeconds: number;
  /** How long a subscriber has to answer one delivery. */
  readonly deliveryTimeoutMs: number;
  /**
   * When each attempt of a delivery goes, in seconds. The first entry is the first
   * attempt, which always goes at once, so it must be 0; each later entry is the wait
   * before the next retry. Its length is the number of attempts (the retry budget), at
   * most RETRY_SCHEDULE_MAX_ATTEMPTS; no wait is longer than the retention period.
   */
  readonly retryScheduleSeconds: readonly number[];
  /** Relative jitter applied to each retry delay (0.2 = ±20 %). */
  readonly retryJitter: number;
  /** Consecutive failed attempts after which an endpoint is quarantined. */
  readonly quarantineAfterFailures: number;
  /** First and last probe interval of a quarantined endpoint. */
  readonly probeIntervalMinSeconds: number;
  readonly probeIntervalMaxSeconds: number;
  /** How long an endpoint may stay quarantined before it is disabled. */
  readonly disableAfterQuarantineSeconds: number;
  /** Most deliveries held for one quarantined webhook; beyond, a gap marker counts them. */
  readonly heldPerWebhook: number;
  /** Retention of events, streams, dead letters and attempts. */
  readonly retentionDays: number;
  /** Most delivery POSTs per second to one endpoint. */
  readonly endpointRatePerSecond: number;
  /**
   * While an endpoint is failing (before quarantine), at most one attempt per this
   * interval: a hanging endpoint can then hold only a few delivery workers.
   */
  readonly failingAttemptIntervalMs: number;
  /**
   * At most this many attempts per `failingAttemptIntervalMs` to all of one tenant's
   * failing endpoints together: a tenant whose many endpoints hang cannot hold every
   * delivery worker before they are quarantined.
   */
  readonly failingAttemptsPerTenant: number;
  /** Allow http:// and private, loopback and link-local targets (sandbox only). */
  readonly allowPrivateTargets: boolean;
}

export const DEFAULT_CONFIG: SluiceConfig = Object.freeze({
  objectRatePerSecond: 100,
  objectBurst: 200,
  objectQueueCap: 10_000,
  tenantRatePerSecond: 500,
  tenantBurst: 1_000,
  maxWebhooksPerTenant: 100,
  turnMaxEvents: 500,
  turnMaxMs: 2_000,
  sharedTurnMaxMs: 250,
  leaseMs: 30_000,
  bulkLaneAfterRingsPerSecond: 100,
  ingestGraceMs: 60_000,
  reconcileIntervalSeconds: 60,
  stuckAfterMs: 90_000,
  switchCacheMs: 5_000,
  canaryIntervalSeconds: 60,
  deliveryTimeoutMs: 10_000,
  retryScheduleSeconds: Object.freeze([0, 5, 300, 1_800, 7_200, 18_000, 36_000, 36_000]),
  retryJitter: 0.2,
  quarantineAfterFailures: 5,
  probeIntervalMinSeconds: 60,
  probeIntervalMaxSeconds: 3_600,
  disableAfterQuarantineSeconds: 3 * 24 * 3_600,
  heldPerWebhook: 10_000,
  retentionDays: 7,
  endpointRatePerSecond: 50,
  failingAttemptIntervalMs: 5_000,
  failingAttemptsPerTenant: 5,
  allowPrivateTargets: false,
});

type Rule = (value: unknown) => string | undefined;

const positiveInt =
  (max = Number.MAX_SAFE_INTEGER): Rule =>
  (v) =>
    Number.isInteger(v) && (v as number) >= 1 && (v as number) <= max ? undefined : `must be an integer from 1 to ${max}`;
const nonNegativeInt: Rule = (v) => (Number.isInteger(v) && (v as number) >= 0 ? undefined : 'must be an integer ≥ 0');
const fraction: Rule = (v) => (typeof v === 'number' && v >= 0 && v < 1 ? undefined : 'must be a number in [0, 1)');
const bool: Rule = (v) => (typeof v === 'boolean' ? undefined : 'must be true or false');
/**
 * Most attempts a retry schedule may give a delivery: 12 times the default's 8, and
 * with waits of up to the retention period, far longer than any delivery is worth
 * trying. The whole config travels in each function's environment (SLUICE_CONFIG),
 * which Lambda limits to 4 KB with its other variables: an unbounded schedule would
 * pass synth and fail the deploy partway.
 */
export const RETRY_SCHEDULE_MAX_ATTEMPTS = 100;

const schedule: Rule = (v) => {
  if (!Array.isArray(v) || v.length === 0 || !v.every((s) => Number.isInteger(s) && s >= 0)) {
    // From a SLUICE_* variable, `0,5,300` is not JSON and arrives as that string.
    return "must be a non-empty list of whole seconds ≥ 0, written as JSON: [0,5,300] (SLUICE_RETRY_SCHEDULE_SECONDS='[0,5,300]' in the sandbox)";
  }
  // The delivery stage reads entry n as the wait before attempt n + 1 (backoff.ts), and
  // sends attempt 1 at once: a first entry of 60 would be dropped without a word, and
  // with it one attempt of those the deployer counted.
  if (v[0] !== 0) {
    return 'must start with 0: the first entry is the first attempt, which always goes at once, and each later entry is the wait in seconds before the next retry (e.g. [0, 60, 300, 3600] for 4 attempts)';
  }
  if (v.length > RETRY_SCHEDULE_MAX_ATTEMPTS) {
    return `must have at most ${RETRY_SCHEDULE_MAX_ATTEMPTS} entries (attempts), not ${v.length}: the config travels in each function's environment, which Lambda limits to 4 KB`;
  }
  return undefined;
};

/** Time a function keeps for its own writes after the longest work its config allows. */
const FUNCTION_MARGIN_MS = 5_000;
// Two doorbells of one object in a batch run their turns one after the other.
const MAX_TURN_MS = (DISTRIBUTE_QUEUE.consumerTimeoutSeconds * 1000 - FUNCTION_MARGIN_MS) / 2;
const MAX_DELIVERY_TIMEOUT_MS = (DELIVER_QUEUE.consumerTimeoutSeconds * 1000 - FUNCTION_MARGIN_MS) / 2;

const RULES: { readonly [K in keyof SluiceConfig]: Rule } = {
  objectRatePerSecond: positiveInt(100_000),
  objectBurst: positiveInt(1_000_000),
  objectQueueCap: positiveInt(10_000_000),
  // At most the burst's bound: the burst must be at least the rate (a usage plan's burst
  // is API Gateway's token bucket, 5,000 at most in an account by default).
  tenantRatePerSecond: positiveInt(5_000),
  tenantBurst: positiveInt(5_000),
  maxWebhooksPerTenant: positiveInt(10_000),
  turnMaxEvents: positiveInt(10_000),
  // A turn ends well inside the distributor's timeout, and a delivery's release step
  // (which may start a POST just before deliveryTimeoutMs and wait that long again for
  // it) inside the delivery function's: a function that times out retries its batch.
  turnMaxMs: positiveInt(MAX_TURN_MS),
  sharedTurnMaxMs: positiveInt(MAX_TURN_MS),
  leaseMs: positiveInt(900_000),
  bulkLaneAfterRingsPerSecond: positiveInt(1_000_000),
  ingestGraceMs: positiveInt(900_000),
  reconcileIntervalSeconds: positiveInt(3_600),
  stuckAfterMs: positiveInt(3_600_000),
  switchCacheMs: positiveInt(10_000),
  // At most 2 minutes: canary-stale pages when 5 minutes pass without a delivered tick, so
  // it tolerates (300 − interval) s of change in the canary's end-to-end latency from one
  // run to the next; at 4 minutes a run delivered at once and the next a minute late paged.
  canaryIntervalSeconds: positiveInt(120),
  deliveryTimeoutMs: positiveInt(MAX_DELIVERY_TIMEOUT_MS),
  retryScheduleSeconds: schedule,
  retryJitter: fraction,
  quarantineAfterFailures: positiveInt(1_000),
  probeIntervalMinSeconds: positiveInt(86_400),
  probeIntervalMaxSeconds: positiveInt(86_400),
  disableAfterQuarantineSeconds: nonNegativeInt,
  heldPerWebhook: positiveInt(1_000_000),
  retentionDays: positiveInt(365),
  endpointRatePerSecond: positiveInt(10_000),
  failingAttemptIntervalMs: positiveInt(3_600_000),
  failingAttemptsPerTenant: positiveInt(10_000),
  allowPrivateTargets: bool,
};

/**
 * Whether `value` passes the rule of `setting` on its own (a known setting only). A rule
 * between settings judges a value as given only if it does: one out of its own bounds is
 * listed once, not again for rules it was never going to meet.
 */
export function withinBounds(setting: string, value: unknown): boolean {
  return Object.hasOwn(RULES, setting) && RULES[setting as keyof SluiceConfig](value) === undefined;
}

/**
 * Problems met while reading overrides, before their settings can be checked: a setting
 * given as a context key of its own, a `sluice` context value that is not JSON, the
 * sandbox's PORT or SLUICE_ADMIN_KEY. They travel with the overrides, and buildConfig
 * lists them with the settings' own: one synth or start shows every problem, not one
 * stage's at a time.
 */
const PROBLEMS_READING = new WeakMap<object, readonly string[]>();

/** A copy of the overrides that carries these problems, after any the overrides carry already. */
export function withProblems(overrides: Readonly<Record<string, unknown>>, problems: readonly string[]): Readonly<Record<string, unknown>> {
  const copy = { ...overrides };
  PROBLEMS_READING.set(copy, [...problemsReading(overrides), ...problems]);
  return copy;
}

/** The problems the overrides carry (withProblems); none for plain ones. */
export function problemsReading(overrides: object): readonly string[] {
  return PROBLEMS_READING.get(overrides) ?? [];
}

/**
 * `, not the string "…"` for a value given as a string, where every setting is a number,
 * a list or a boolean: one in range reads as if the range were the problem (`.2` or
 * `+5000` in a SLUICE_* variable, which are not JSON and arrive as written; `"5000"` in cdk.json).
 */
function asString(value: unknown): string {
  if (typeof value !== 'string') return '';
  const shown = value.length > 40 ? `${value.slice(0, 40)}…` : value;
  return `, not the string ${JSON.stringify(shown)}`;
}

/**
 * Merges overrides onto the defaults, checks every setting and freezes the result. The
 * problems the overrides carry (withProblems) are listed first, with those found here.
 */
export function buildConfig(overrides: Readonly<Record<string, unknown>> = {}): SluiceConfig {
  const problems: string[] = [];
  for (const key of Object.keys(overrides)) {
    // Own names only: `in` would take constructor, toString or __proto__ for settings.
    if (!Object.hasOwn(RULES, key)) problems.push(`${key} is not a setting`);
  }
  // A setting given as undefined is not given (the construct's `config: { objectQueueCap:
  // cap }` with cap unset, which Partial<SluiceConfig> allows): its default stands, as for
  // any CDK prop. JSON (cdk.json, -c, SLUICE_*) cannot say undefined.
  const given = Object.fromEntries(Object.entries(overrides).filter(([, value]) => value !== undefined));
  const merged = { ...DEFAULT_CONFIG, ...given } as Record<string, unknown>;
  const invalid = new Set<string>();
  for (const [key, rule] of Object.entries(RULES)) {
    const problem = rule(merged[key]);
    if (problem) {
      problems.push(`${key} ${problem}${asString(merged[key])}`);
      invalid.add(key);
    }
  }
  const c = merged as unknown as SluiceConfig;
  // Each relation is checked once its own settings pass, whatever the others do: one
  // synth lists every problem, not those of the settings alone and the rest next time.
  const both = (...keys: (keyof SluiceConfig)[]) => keys.every((key) => !invalid.has(key));
  if (both('objectBurst', 'objectRatePerSecond') && c.objectBurst < c.objectRatePerSecond) {
    problems.push('objectBurst must be ≥ objectRatePerSecond');
  }
  if (both('tenantBurst', 'tenantRatePerSecond') && c.tenantBurst < c.tenantRatePerSecond) {
    problems.push('tenantBurst must be ≥ tenantRatePerSecond');
  }
  if (both('probeIntervalMaxSeconds', 'probeIntervalMinSeconds') && c.probeIntervalMaxSeconds < c.probeIntervalMinSeconds) {
    problems.push('probeIntervalMaxSeconds must be ≥ probeIntervalMinSeconds');
  }
  if (both('leaseMs', 'turnMaxMs') && c.leaseMs <= c.turnMaxMs) problems.push('leaseMs must be greater than turnMaxMs');
  // A longer wait would outlast the record of the attempt before it (attempts are kept
  // for the retention period); and with the waits bounded, so is the schedule's size.
  const retentionSeconds = c.retentionDays * 86_400;
  if (both('retryScheduleSeconds', 'retentionDays') && c.retryScheduleSeconds.some((wait) => wait > retentionSeconds)) {
    problems.push(
      `retryScheduleSeconds must wait at most the retention period before a retry (retentionDays × 86400 = ${retentionSeconds} s)`,
    );
  }
  // First, and only now: a problem met reading the overrides does not keep the settings
  // from being checked against each other above.
  problems.unshift(...problemsReading(overrides));
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze({ ...c, retryScheduleSeconds: Object.freeze([...c.retryScheduleSeconds]) });
}

/**
 * What a deployment that runs the API function (the stack, the sandbox) says of an
 * ingest grace too short for it, or undefined. The distributor skips a slot whose ingest
 * has not written it after the grace, and a slow ingest's write after that would store
 * an event no turn delivers, answered `accepted`: no ingest may outlive the grace. The
 * grace is counted from the reservation time of a later slot (or the meta item's last
 * one), which is that ingest's clock reading before its reserving write: the write may
 * come up to a timeout after it, an earlier slot's ingest reserved before that write,
 * and its own writes may take up to a timeout more. So twice the timeout. Checked on
 * the setting as given too (`given`), so it is listed with the other problems, if it is
 * within its own bounds (one outside them is listed by buildConfig).
 * buildConfig leaves it alone: the stores' own tests run a distributor with a grace
 * of milliseconds and no API function.
 */
export function ingestGraceProblem(config: SluiceConfig | undefined, given: unknown): string | undefined {
  const graceMs = config?.ingestGraceMs ?? (typeof given === 'number' && withinBounds('ingestGraceMs', given) ? given : undefined);
  return graceMs !== undefined && graceMs <= 2 * API_TIMEOUT_SECONDS * 1000
    ? `ingestGraceMs must be more than twice the API function's timeout (${2 * API_TIMEOUT_SECONDS * 1000} ms)`
    : undefined;
}

const ENV_PREFIX = 'SLUICE_';

/** The environment variable that carries the whole config into a Lambda function. */
export const CONFIG_ENV = 'SLUICE_CONFIG';

/** Variables with the prefix that are not settings: the sandbox's own, the deployed config, the bench's. */
const ENV_NOT_SETTINGS = new RegExp(`^(?:${ENV_PREFIX}ADMIN_KEY|${ENV_PREFIX}DATA_DIR|${CONFIG_ENV}|${ENV_PREFIX}BENCH_[A-Z_]+)$`);

/**
 * `SLUICE_OBJECT_QUEUE_CAP=500` → `{ objectQueueCap: 500 }`; values are JSON where they
 * parse. A SLUICE_* variable that names no setting (a misspelling) is passed on under
 * its own name, so buildConfig refuses it with the other problems, as cdk context does.
 */
export function overridesFromEnv(env: Readonly<Record<string, string | undefined>>): Record<string, unknown> {
  const overrides: Record<string, unknown> = {};
  const settingNames = new Set<string>();
  for (const key of Object.keys(RULES)) {
    const name = ENV_PREFIX + key.replace(/[A-Z]/g, (ch) => `_${ch}`).toUpperCase();
    settingNames.add(name);
    const raw = env[name];
    if (raw === undefined || raw === '') continue;
    overrides[key] = parseEnvValue(raw);
  }
  for (const [name, raw] of Object.entries(env)) {
    if (name.startsWith(ENV_PREFIX) && !settingNames.has(name) && !ENV_NOT_SETTINGS.test(name)) overrides[name] = raw;
  }
  return overrides;
}

function parseEnvValue(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

/**
 * Reads the config a function was deployed with (the CDK stack serializes it into
 * SLUICE_CONFIG). A setting this code does not know is left out: CloudFormation updates
 * a function's code and its environment in two steps, so a cold start between them, or
 * during a failed deploy's rollback, runs one version's code with the other's
 * SLUICE_CONFIG, which may hold a setting added or removed since (the synth that wrote it
 * checked every setting it names). The settings this code knows are checked as ever.
 */
export function configFromEnvironment(env: Readonly<Record<string, string | undefined>>): SluiceConfig {
  const raw = env[CONFIG_ENV];
  if (raw === undefined) throw new ConfigError([`${CONFIG_ENV} is not set`]);
  const written = JSON.parse(raw) as Record<string, unknown>;
  return buildConfig(Object.fromEntries(Object.entries(written).filter(([key]) => Object.hasOwn(RULES, key))));
}

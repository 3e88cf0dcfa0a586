/**
 * Endpoint health (SPEC §2 Delivery isolation) as a pure state machine with
 * injected time:
 *
 *   healthy ─failure→ failing ─N consecutive failures→ quarantined ─time→ disabled
 *      ↑                 │success                 │probe ok          ↑
 *      └─────────────────┴────────────────────────┘        410 (from any state)
 *
 * A quarantined endpoint gets probes only, on an interval that doubles from the
 * minimum to the maximum; real deliveries are held. Re-enabling (PATCH active)
 * returns any state to healthy.
 *
 * A probe's success ends a quarantine, but only a real delivery's ends the trouble:
 * an endpoint that answers pings and fails its deliveries (a handler that crashes on
 * real events, a database down behind a healthy front) is quarantined again by the
 * released deliveries a minute later. Across such a run of quarantines the endpoint
 * keeps when its trouble began (`troubleSince`), so it is disabled (and its owner
 * told) once that is `disableAfterQuarantineSeconds` ago, and its probes go on
 * doubling from where the last quarantine's stood, so that each round of released
 * attempts comes later than the one before. Without them each quarantine started the
 * clock and the probes afresh: such an endpoint was never disabled, and its probes
 * and releases came every minute for ever.
 */

export type HealthState = 'healthy' | 'failing' | 'quarantined' | 'disabled';

export interface LastFailure {
  readonly at: string;
  readonly status_code: number | null;
  readonly error: string;
}

export interface Health {
  readonly state: HealthState;
  readonly consecutiveFailures: number;
  readonly lastSuccessAt: string | undefined;
  readonly lastFailure: LastFailure | undefined;
  /** While quarantined. */
  readonly quarantinedAt: number | undefined;
  readonly probeIntervalSeconds: number | undefined;
  readonly nextProbeAt: number | undefined;
  /** Why it is disabled: 'gone' (410), 'quarantine_expired' or 'by_owner'. */
  readonly disabledReason: string | undefined;
  /** When its first quarantine since a delivery last succeeded began (a probe's success does not end it). */
  readonly troubleSince?: number | undefined;
  /** The probe interval its last quarantine reached, while `troubleSince` is set: the next one doubles it. */
  readonly troubleProbeSeconds?: number | undefined;
}

export interface HealthPolicy {
  readonly quarantineAfterFailures: number;
  readonly probeIntervalMinSeconds: number;
  readonly probeIntervalMaxSeconds: number;
  readonly disableAfterQuarantineSeconds: number;
}

export type HealthEvent =
  | { readonly type: 'success'; readonly now: number }
  | { readonly type: 'failure'; readonly now: number; readonly statusCode: number | undefined; readonly error: string }
  | { readonly type: 'gone'; readonly now: number; readonly statusCode: number }
  | { readonly type: 'probe_succeeded'; readonly now: number }
  | { readonly type: 'probe_failed'; readonly now: number; readonly statusCode: number | undefined; readonly error: string }
  | { readonly type: 'disabled_by_owner'; readonly now: number }
  | { readonly type: 'reenabled'; readonly now: number };

export const INITIAL_HEALTH: Health = {
  state: 'healthy',
  consecutiveFailures: 0,
  lastSuccessAt: undefined,
  lastFailure: undefined,
  quarantinedAt: undefined,
  probeIntervalSeconds: undefined,
  nextProbeAt: undefined,
  disabledReason: undefined,
};

function recovered(health: Health, now: number): Health {
  return { ...INITIAL_HEALTH, lastSuccessAt: new Date(now).toISOString(), lastFailure: health.lastFailure };
}

function failure(now: number, statusCode: number | undefined, error: string): LastFailure {
  return { at: new Date(now).toISOString(), status_code: statusCode ?? null, error };
}

function disabled(health: Health, reason: string): Health {
  return {
    ...health,
    state: 'disabled',
    quarantinedAt: undefined,
    probeIntervalSeconds: undefined,
    nextProbeAt: undefined,
    disabledReason: reason,
    troubleSince: undefined,
    troubleProbeSeconds: undefined,
  };
}

/**
 * How soon after a probe's success a new quarantine goes on with the same trouble: a day.
 * An endpoint that fails its released deliveries is quarantined again within minutes, or
 * hours at a slow webhook's pace; one quiet for longer starts its 3 days afresh.
 */
export const TROUBLE_RESUMES_WITHIN_MS = 24 * 3_600_000;

/** Since when an endpoint in quarantine has been in trouble: counted towards disabling it. */
function troubleStart(health: Health, now: number): number {
  return health.troubleSince ?? health.quarantinedAt ?? now;
}

export function nextHealth(health: Health, event: HealthEvent, policy: HealthPolicy): Health {
  switch (event.type) {
    case 'gone':
      // The failure as every other is shown (and as its attempt is logged): the reason
      // the webhook is disabled says "gone" already.
      return disabled({ ...health, lastFailure: failure(event.now, event.statusCode, `HTTP ${event.statusCode}`) }, 'gone');
    case 'disabled_by_owner':
      return disabled(health, 'by_owner');
    case 'reenabled':
      return { ...INITIAL_HEALTH, lastSuccessAt: health.lastSuccessAt, lastFailure: health.lastFailure };
    case 'success':
      if (health.state === 'healthy' || health.state === 'failing') return recovered(health, event.now);
      return health;
    case 'failure': {
      if (health.state !== 'healthy' && health.state !== 'failing') return health;
      const consecutiveFailures = health.consecutiveFailures + 1;
      const lastFailure = failure(event.now, event.statusCode, event.error);
      if (consecutiveFailures < policy.quarantineAfterFailures) {
        return { ...health, state: 'failing', consecutiveFailures, lastFailure };
      }
      // In trouble since an earlier quarantine that only a probe ended, within a day of that
      // probe: past the limit, disabled now. (A first quarantine is judged by its failed
      // probes, as it always was; so is one that comes a day or more after a probe's success,
      // whose endpoint had too little traffic since to tell either way.)
      const resumes =
        health.troubleSince !== undefined &&
        health.lastSuccessAt !== undefined &&
        event.now - Date.parse(health.lastSuccessAt) < TROUBLE_RESUMES_WITHIN_MS;
      const troubleSince = resumes ? (health.troubleSince as number) : event.now;
      if (resumes && event.now - troubleSince >= policy.disableAfterQuarantineSeconds * 1000) {
        return disabled({ ...health, consecutiveFailures, lastFailure }, 'quarantine_expired');
      }
      const probeIntervalSeconds =
        !resumes || health.troubleProbeSeconds === undefined
          ? policy.probeIntervalMinSeconds
          : Math.min(policy.probeIntervalMaxSeconds, health.troubleProbeSeconds * 2);
      return {
        ...health,
        state: 'quarantined',
        consecutiveFailures,
        lastFailure,
        quarantinedAt: event.now,
        probeIntervalSeconds,
        nextProbeAt: event.now + probeIntervalSeconds * 1000,
        troubleSince,
        troubleProbeSeconds: undefined,
      };
    }
    case 'probe_succeeded':
      if (health.state !== 'quarantined') return health;
      // Deliveries go out again, but the trouble is not over until one of them succeeds.
      return {
        ...recovered(health, event.now),
        troubleSince: troubleStart(health, event.now),
        troubleProbeSeconds: health.probeIntervalSeconds ?? policy.probeIntervalMinSeconds,
      };
    case 'probe_failed': {
      if (health.state !== 'quarantined') return health;
      const lastFailure = failure(event.now, event.statusCode, event.error);
      const since = event.now - troubleStart(health, event.now);
      if (since >= policy.disableAfterQuarantineSeconds * 1000) {
        return disabled({ ...health, lastFailure, consecutiveFailures: health.consecutiveFailures + 1 }, 'quarantine_expired');
      }
      const probeIntervalSeconds = Math.min(
        policy.probeIntervalMaxSeconds,
        (health.probeIntervalSeconds ?? policy.probeIntervalMinSeconds) * 2,
      );
      return {
        ...health,
        consecutiveFailures: health.consecutiveFailures + 1,
        lastFailure,
        probeIntervalSeconds,
        nextProbeAt: event.now + probeIntervalSeconds * 1000,
      };
    }
  }
}

/** Whether real deliveries go out to an endpoint in this state, or are held. */
export function deliversTo(health: Health): boolean {
  return health.state === 'healthy' || health.state === 'failing';
}

/**
 * Whether a transition starts releasing what the endpoint holds (`held` deliveries): a
 * probe's success leaving quarantine, re-enabling a disabled or quarantined webhook, or
 * re-enabling one that holds deliveries. A delivery's success ending `failing` starts
 * none: with deliveries held, what succeeds is a release step (or a delivery that read
 * the webhook before they were held), and the chain it belongs to goes on by itself; a
 * second chain would send the same held deliveries again.
 */
export function startsRelease(before: Health, after: Health, event: HealthEvent, held: number): boolean {
  if (after.state !== 'healthy') return false;
  return before.state === 'quarantined' || before.state === 'disabled' || (event.type === 'reenabled' && held > 0);
}

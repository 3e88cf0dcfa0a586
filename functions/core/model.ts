/** The nouns of sluice, as they travel between stages. */
import type { Health } from './health.ts';

export const SLUICE_VERSION = '0.1.0';

/** An event as a producer sends it, after validation. */
export interface EventInput {
  readonly resource: string;
  readonly parents: readonly string[];
  readonly type: string;
  readonly data: unknown;
  /** The producer's idempotency key (`id` in the request), if it sent one. */
  readonly idempotencyKey: string | undefined;
}

/** An accepted event waiting in its object's queue. */
export interface PendingEvent {
  readonly id: string;
  readonly slot: number;
  readonly resource: string;
  readonly parents: readonly string[];
  readonly type: string;
  readonly data: unknown;
  readonly createdAt: string;
}

/** An event as subscribers see it (SPEC §3 Deliveries). */
export interface DeliveredEvent {
  readonly id: string;
  readonly seq: number;
  readonly resource: string;
  readonly parents: readonly string[];
  readonly type: string;
  readonly data: unknown;
  readonly created_at: string;
}

export type WebhookStatus = 'active' | 'disabled';

export interface Webhook {
  readonly id: string;
  readonly tenantId: string;
  readonly resource: string;
  readonly url: string;
  readonly types: readonly string[];
  readonly description: string;
  readonly status: WebhookStatus;
  /** Signing secrets, newest first; each one after the first signs only until its time in previousSecretsExpireAt. */
  readonly secrets: readonly string[];
  /**
   * When each secret a rotation replaced stops signing (epoch ms), in the order of
   * `secrets` after the first: 24 h after its own replacement, however often the
   * secret was rotated since.
   */
  readonly previousSecretsExpireAt: readonly number[];
  readonly health: Health;
  /** Optimistic-concurrency version of `health`. */
  readonly healthVersion: number;
  /** Deliveries held in DynamoDB while the endpoint is quarantined or disabled, or until they drain. */
  readonly heldCount: number;
  /**
   * Held deliveries the held count found gone without a release, all told (DynamoDB's
   * TTL deletes held items past the retention period), and how many of them a sent
   * `sluice.gap` marker stands for, and when the last were found gone (epoch ms).
   */
  readonly heldLost?: { readonly count: number; readonly sent: number; readonly at: number };
  /**
   * When the webhook began to hold what it holds (epoch ms): noted by the hold that found
   * nothing counted, removed when its release ends. Nothing it holds was held before, so
   * none of it can have expired (and been deleted by DynamoDB's TTL) until a retention
   * period after it. Absent on a webhook holding since before it was kept, or whose note
   * failed: a held count above what is held is then taken for TTL's doing, as before.
   */
  readonly heldSince?: number;
  /** Only the probe chain carrying this token may probe (one chain per quarantine). */
  readonly probeToken: string | undefined;
  /** Only the release chain carrying this token may release held deliveries. */
  readonly releaseToken: string | undefined;
  /**
   * When the release chain last started or took a step (epoch ms): how a lost chain is
   * noticed. A start or a look that sends nothing (a chain waiting for its time) is noted
   * as a step already ended (core/switches.ts `releaseLookAt`).
   */
  readonly releaseAt?: number;
  /**
   * Until when (epoch ms) the release chain waits for the shares of the endpoint's time
   * given before its backlog was held behind its pace (app/delivery.ts `holdBehindPace`):
   * deliveries given those shares go at them, past what is held. Absent for any other
   * chain (a quarantine's, a pause's), behind whose held deliveries every one waits.
   */
  readonly releaseNotBefore?: number;
  /** The endpoint asked (429/503 `Retry-After`) to be left alone until then (epoch ms). */
  readonly notBefore?: number;
  /**
   * POSTs a second its owner asked for (`rate_per_second`), below the deployment's
   * `endpointRatePerSecond`; absent: the deployment's (core/endpoint-pace.ts `endpointRate`).
   */
  readonly ratePerSecond?: number;
  /**
   * How long the endpoint takes to answer, while it answers slowly (ms; see
   * slowAfterAnswer in core/endpoint-pace.ts): its pace follows it.
   */
  readonly slowMs?: number;
  /** Sluice disabled it and its owner's notice has not been sent yet (see `applyHealth`). */
  readonly noticePending?: boolean;
  readonly createdAt: string;
  readonly updatedAt: string;
}

/** The secrets that sign a delivery at `now`: the newest, and each one a rotation replaced for 24 h after. */
export function liveSecrets(webhook: Pick<Webhook, 'secrets' | 'previousSecretsExpireAt'>, now: number): string[] {
  const [current, ...previous] = webhook.secrets;
  if (current === undefined) return [];
  return [current, ...previous.filter((_, i) => now < (webhook.previousSecretsExpireAt[i] ?? 0))];
}

export interface TenantLimits {
  readonly max_webhooks: number;
  readonly rate_per_second: number;
  readonly burst: number;
}

export interface Tenant {
  readonly id: string;
  readonly name: string;
  readonly limits: TenantLimits;
  /** The API Gateway usage-plan key the authorizer reports for this tenant. */
  readonly usageKey: string;
  readonly createdAt: string;
}

/** A webhook as the distributor sees it: whom an event goes to, and nothing it need not read (its secrets). */
export type Subscriber = Pick<Webhook, 'id' | 'tenantId' | 'resource' | 'types' | 'status'>;

/** A `sluice.gap` marker: stands for events that were dropped, with their count. */
export interface GapMarker {
  readonly id: string;
  readonly resource: string;
  readonly type: 'sluice.gap';
  readonly data: { readonly dropped: number; readonly reason: 'switch_drop' | 'held_overflow' | 'retention' };
  readonly created_at: string;
}

/** One delivery: up to 100 events for one webhook, the unit that is signed, sent and retried. */
export interface DeliveryMessage<E extends DeliveredEvent | GapMarker = DeliveredEvent | GapMarker> {
  readonly kind?: 'delivery';
  readonly deliveryId: string;
  readonly tenantId: string;
  readonly webhookId: string;
  readonly events: readonly E[];
  /** The attempt this message makes; 1 for the first. */
  readonly attempt: number;
  /**
   * How many of its attempts so far the endpoint answered "wait" (429/503 with a
   * readable Retry-After) within FREE_WAITS (core/backoff.ts): those spent nothing of
   * the retry budget, which counts `attempt - waited` attempts.
   */
  readonly waited?: number;
  /**
   * The delivery (its id, the POST's `webhook-id`) a release step sent it in when the
   * endpoint answered "wait": held again, it goes again in that delivery only, with the
   * same events, as its next attempt (see `packHeld`), not merged with another one asked
   * to wait that a release step's other lane sent at the same time.
   */
  readonly waitedIn?: string;
  /** Not to be attempted before this time (epoch ms): waits longer than SQS's 15 minutes are chained. */
  readonly notBefore?: number;
  /** When this attempt's share of the endpoint's rate lets it go (epoch ms; see core/endpoint-pace.ts). */
  readonly sendAt?: number;
  /**
   * How long that share is (ms): the endpoint's pace when it was reserved. A share
   * reserved at a quicker pace than the endpoint's when it comes (it has answered
   * slowly since) is given up for one at the slower pace.
   */
  readonly paceMs?: number;
  /**
   * How many times in a row it found its failing endpoint's attempt taken: each wait
   * is twice the last (failingWaitSeconds, core/backoff.ts). Cleared when it is attempted.
   */
  readonly failingWaits?: number;
  /**
   * When a dead-letter replay sent it again (epoch ms): its own dead letter, should it
   * become one again, replaces the one it was sent from (same key), which that replay
   * removes only if it is still the one it read.
   */
  readonly replayedAt?: number;
  /**
   * Sent again by a replay (of a window, or of dead letters): its events were logged at
   * their delivery's first attempt, so its own attempts are recorded as attempts only. Logged
   * again, each replay would add its events to the windows after it, and a later replay of
   * such a window would send them (and log them) once more.
   */
  readonly replay?: boolean;
}

/** A probe of a quarantined endpoint, valid while the webhook's probe token matches. */
export interface ProbeMessage {
  readonly kind: 'probe';
  readonly tenantId: string;
  readonly webhookId: string;
  readonly token: string;
  readonly notBefore?: number;
  /**
   * The round it probes: the webhook's `health.nextProbeAt` when it was sent, which each
   * probe's answer moves on. A copy SQS hands over again (standard queues deliver at
   * least once) finds its round probed and ends, where it probed again and sent a second
   * next probe, two chains from then on. Absent on probes sent before it was kept.
   */
  readonly dueAt?: number;
  /** How many times in a row it found its tenant's budget for failing endpoints spent (see `probe`). */
  readonly tenantWaits?: number;
}

/** A step of releasing a recovered endpoint's held deliveries, valid while the release token matches. */
export interface ReleaseMessage {
  readonly kind: 'release';
  readonly tenantId: string;
  readonly webhookId: string;
  readonly token: string;
  /**
   * The step it follows: the `release_at` that step (or the chain's start) wrote, which
   * each step moves on. A copy SQS hands over at the same time as this one finds it moved
   * by a step that may still be sending, and ends (see `markReleaseStep`), where it ran a
   * step beside the first's (the same page POSTed twice) and went on as a second chain.
   * Absent on steps sent before it was kept.
   */
  readonly after?: number;
  /** Since when (epoch ms) the webhook has counted held deliveries but none could be found. */
  readonly emptySince?: number;
  /**
   * When the chain's first step may send (epoch ms): a chain started for a slow endpoint's
   * backlog (see `holdBehindPace` in app/delivery.ts) waits for the share of the endpoint's
   * time it was given, after every delivery given a share before it.
   */
  readonly notBefore?: number;
}

/**
 * A look, once the switch caches of every delivery worker have had time to see a lift,
 * at whether the pause or drop switch that held (or counted) a webhook's deliveries is
 * still in force: if not, and no release has stepped since, one is started.
 */
export interface RecheckMessage {
  readonly kind: 'recheck';
  readonly tenantId: string;
  readonly webhookId: string;
  /** The holds and counts it answers for were made before this time (epoch ms). */
  readonly heldBefore: number;
}

/**
 * The reconciler's check of a webhook `by_chain` lists (see app/delivery/chains.ts `check`):
 * whether its probe or release chain was lost, and whether a disable notice is owed.
 */
export interface CheckMessage {
  readonly kind: 'check';
  readonly tenantId: string;
  readonly webhookId: string;
  /** When the reconciler sent it (epoch ms): how late it comes is how late the deliver queue runs. */
  readonly sentAt: number;
}

export type DeliverQueueMessage = DeliveryMessage | ProbeMessage | ReleaseMessage | RecheckMessage | CheckMessage;

/** Who is calling the API, as the authorizer decided. */
export type Principal = { readonly kind: 'admin' } | { readonly kind: 'tenant'; readonly tenantId: string };

/** The identity of one per-object queue. */
export interface ObjectKey {
  readonly tenantId: string;
  readonly resource: string;
}

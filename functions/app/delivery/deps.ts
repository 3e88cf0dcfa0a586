/**
 * What the delivery stage is given (its ports, as `DeliveryDeps`), what it answers,
 * and the small helpers every part of it shares: log context, waits through SQS
 * delays, the retry schedule's next wait, and which webhooks take deliveries.
 */
import type { DeadLetters } from '../../adapters/dead-letters.ts';
import type { DeliveryLog } from '../../adapters/delivery-log.ts';
import type { GapCounts } from '../../adapters/gap-counts.ts';
import type { HeldDeliveries } from '../../adapters/held-deliveries.ts';
import type { PaceStore } from '../../adapters/pace-store.ts';
import type { SendBudgets } from '../../adapters/send-budgets.ts';
import type { SwitchReader } from '../../adapters/switch-store.ts';
import type { Sender, SendResult } from '../../adapters/webhook-sender.ts';
import type { WebhookStore } from '../../adapters/webhook-store.ts';
import { type AttemptFailure, retryDelaySeconds, sqsDelay } from '../../core/backoff.ts';
import type { SluiceConfig } from '../../core/config.ts';
import { attemptsSpent, eventCount } from '../../core/deliveries.ts';
import { endpointRate, paceLookSeconds } from '../../core/endpoint-pace.ts';
import { deliversTo, type Health } from '../../core/health.ts';
import type { DeliverQueueMessage, DeliveryMessage, ProbeMessage, Webhook } from '../../core/model.ts';
import type { LoggerPort, MetricsPort } from '../../core/telemetry.ts';

/** Tells a webhook's owner it was disabled (SNS in AWS). */
export interface Notifier {
  webhookDisabled(notice: WebhookDisabledNotice): Promise<void>;
}

export interface WebhookDisabledNotice {
  readonly type: 'webhook.disabled';
  readonly tenant: string;
  readonly webhook: string;
  readonly url: string;
  readonly reason: string;
  readonly last_error: Health['lastFailure'] | null;
  readonly at: string;
}

export interface DeliverQueuePort {
  send(messages: readonly DeliverQueueMessage[], delaySeconds?: number): Promise<void>;
}

export interface DeliveryDeps {
  readonly webhooks: Pick<
    WebhookStore,
    | 'get'
    | 'saveHealth'
    | 'adjustHeld'
    | 'countHeld'
    | 'noteHeldSince'
    | 'resetHeld'
    | 'heldLostSent'
    | 'leaveAloneUntil'
    | 'noteSlowAnswers'
    | 'forgetSlowAnswers'
    | 'noteUnanswered'
    | 'claimNotice'
    | 'noticeSent'
    | 'oweNoticeAgain'
    | 'markReleaseStep'
    | 'endRelease'
    | 'unlistUnwatched'
  >;
  readonly deliveryLog: DeliveryLog;
  readonly held: HeldDeliveries;
  readonly gaps: GapCounts;
  readonly deadLetters: DeadLetters;
  readonly sendBudgets: SendBudgets;
  readonly paces: PaceStore;
  readonly queue: DeliverQueuePort;
  readonly notifier: Notifier;
  readonly switches: SwitchReader;
  readonly send: Sender;
  readonly config: SluiceConfig;
  readonly metrics: MetricsPort;
  readonly logger: LoggerPort;
  readonly now: () => number;
  readonly random?: () => number;
}

export type DeliveryOutcome =
  | 'delivered'
  | 'retrying'
  | 'held'
  | 'waiting'
  | 'throttled'
  | 'dead_lettered'
  | 'disabled'
  | 'dropped'
  | 'probed'
  | 'released'
  | 'checked'
  | 'stale';

export function context(m: { tenantId: string; webhookId: string; deliveryId?: string }) {
  return { tenant: m.tenantId, webhook: m.webhookId, ...(m.deliveryId && { delivery: m.deliveryId }) };
}

/**
 * A dead letter's log fields: its delivery, and the ids of its events and their resources.
 * On-call is paged for it with the admin key, which cannot list a tenant's dead letters,
 * and tells the tenant from this line which events of which resources it did not get.
 */
export function deadLetterContext(message: DeliveryMessage) {
  return {
    ...context(message),
    attempt: message.attempt,
    events: message.events.map((e) => e.id),
    resources: [...new Set(message.events.map((e) => e.resource))],
  };
}

/** A delivery to a webhook its owner deleted: the owner's doing, not an incident, so counted apart from what pages on-call. */
export function dropForDeleted(deps: DeliveryDeps, message: DeliveryMessage): 'dropped' {
  // Events only: a gap marker's events were counted when they were dropped.
  const events = eventCount(message.events);
  if (events > 0) deps.metrics.count('EventsDiscardedByOwner', events, { reason: 'webhook_deleted' });
  deps.logger.info('Delivery dropped: webhook deleted', { ...context(message), events: message.events.length });
  return 'dropped';
}

/** Whether the webhook was deleted since it was read (a consistent read). */
export async function deletedSince(deps: DeliveryDeps, webhook: Webhook): Promise<boolean> {
  return (await deps.webhooks.get(webhook.tenantId, webhook.id)) === undefined;
}

/**
 * Sends a message again after `waitSeconds`, chaining SQS delays for longer waits. A
 * delivery keeps a share of its endpoint's pace (`share`) only when it is waiting for
 * that share: any other wait (Retry-After, a failing endpoint, a retry) ends with the
 * endpoint in another state, and a share kept through it would go out together with
 * every other one kept so.
 */
export async function later(
  deps: DeliveryDeps,
  message: DeliveryMessage | ProbeMessage,
  waitSeconds: number,
  share?: { readonly sendAt: number; readonly paceMs: number | undefined },
): Promise<void> {
  // A wait for a share looks again sooner (core/endpoint-pace.ts `paceLookSeconds`).
  const { delaySeconds } = sqsDelay(share === undefined ? waitSeconds : paceLookSeconds(waitSeconds));
  // The end of the wait to the millisecond, not rounded up to a whole second from now: each
  // link of a chain ends where the one before it would, however late SQS brought it, where
  // rounding put each up to a second later than the last (the five looks of a 15-minute
  // wait for a share, up to five seconds after it). Its last link's delay is rounded up.
  const notBefore = Math.ceil(waitSeconds) > delaySeconds ? deps.now() + waitSeconds * 1000 : undefined;
  const again = message.kind === 'probe' ? message : { ...message, sendAt: share?.sendAt, paceMs: share?.paceMs };
  await deps.queue.send([{ ...again, ...(notBefore !== undefined ? { notBefore } : { notBefore: undefined }) }], delaySeconds);
}

export function failureOf(result: SendResult): AttemptFailure {
  if (result.statusCode === 429) return { kind: 'throttled', retryAfter: result.retryAfter };
  if (result.statusCode === 503) return { kind: 'status', retryAfter: result.retryAfter };
  if (result.statusCode !== undefined) return { kind: 'status' };
  if (result.error?.startsWith('no answer')) return { kind: 'timeout' };
  return { kind: 'connection' };
}

export function describe(result: SendResult): string {
  return result.statusCode !== undefined ? `HTTP ${result.statusCode}` : (result.error ?? 'no answer');
}

/** How long a delivery waits after this failed attempt (the retry schedule), or undefined after its last. */
export function nextAttemptWait(deps: DeliveryDeps, message: DeliveryMessage, result: SendResult, now: number): number | undefined {
  return retryDelaySeconds(
    { scheduleSeconds: deps.config.retryScheduleSeconds, jitter: deps.config.retryJitter },
    attemptsSpent(message),
    failureOf(result),
    now,
    deps.random,
  );
}

/**
 * Takes one attempt from the budget a tenant's failing and quarantined endpoints share
 * (`failingAttemptsPerTenant` per `failingAttemptIntervalMs`): their deliveries' attempts
 * and their probes, so that many hanging endpoints of one tenant cannot hold many
 * delivery workers. False when the window's are spent: the caller waits, it never fails.
 */
export function takeTenantFailingSlot(deps: DeliveryDeps, tenantId: string, now: number): Promise<boolean> {
  return deps.sendBudgets.takeSlot(`failing:${tenantId}`, deps.config.failingAttemptsPerTenant, deps.config.failingAttemptIntervalMs, now);
}

/** Whether a webhook's endpoint is sent deliveries: the webhook is active, and its endpoint healthy or failing (not quarantined). */
export function takesDeliveries(webhook: Webhook): boolean {
  return webhook.status === 'active' && deliversTo(webhook.health);
}

/** Whether a webhook that holds deliveries needs a release chain started: it has none, and its endpoint takes deliveries. */
export function needsChain(webhook: Webhook): boolean {
  return webhook.releaseToken === undefined && takesDeliveries(webhook);
}

/** The POSTs a second the webhook's endpoint gets (core/endpoint-pace.ts `endpointRate`): its pace, its release steps', its replays'. */
export function endpointRateOf(deps: Pick<DeliveryDeps, 'config'>, webhook: Webhook): number {
  return endpointRate(deps.config.endpointRatePerSecond, webhook.ratePerSecond);
}

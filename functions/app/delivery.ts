/**
 * The delivery stage (SPEC §2 Delivery isolation, §3 Deliveries). Four kinds of
 * message arrive on the deliver queue:
 *
 * - a delivery: signed and POSTed, or held while its endpoint is quarantined or
 *   disabled, or delayed when the endpoint's rate is spent; a failed attempt is
 *   retried on the schedule through SQS delays (chained past 15 minutes), and
 *   past the schedule it becomes a dead letter;
 * - a probe of a quarantined endpoint, on a doubling interval;
 * - a release step, sending a recovered endpoint's held deliveries in order at a
 *   capped rate;
 * - a recheck, after deliveries were held or dropped under a kill switch, of whether
 *   the switch was lifted with nothing left to release them (see `expectLift`).
 *
 * `decide` is the one place that says what an attempt's result means.
 */

import { type DeliveryRecords, type HeldDelivery, OWED_GAPS_PER_STEP } from '../adapters/delivery-records.ts';
import type { SwitchReader } from '../adapters/switch-store.ts';
import type { Sender, SendResult } from '../adapters/webhook-sender.ts';
import type { WebhookStore } from '../adapters/webhook-store.ts';
import { type AttemptFailure, askedWaitSeconds, failingWaitSeconds, retryDelaySeconds, sqsDelay } from '../core/backoff.ts';
import type { SluiceConfig } from '../core/config.ts';
import {
  afterFreeWait,
  attemptsSpent,
  deliveryBody,
  eventCount,
  gapCounts,
  gapMarkerDelivery,
  lostHeldCount,
  packHeld,
  partsByResource,
  pingEvent,
  releaseDelivery,
  releaseLanes,
  waitsFree,
} from '../core/deliveries.ts';
import {
  endpointRate,
  holdsBehindPace,
  keepsShare,
  MAX_IN_FLIGHT_PER_ENDPOINT,
  PACE_FAR_AHEAD_MS,
  pacedFarAhead,
  paceInterval,
  paceIntervalFor,
  paceLookSeconds,
  slowAfterAnswer,
  slowAnswerChanged,
  unansweredNoteAfter,
} from '../core/endpoint-pace.ts';
import { deliversTo, type Health, type HealthEvent, nextHealth, startsRelease } from '../core/health.ts';
import { newId } from '../core/ids.ts';
import {
  type CheckMessage,
  type DeliverQueueMessage,
  type DeliveryMessage,
  liveSecrets,
  type ProbeMessage,
  type RecheckMessage,
  type ReleaseMessage,
  SLUICE_VERSION,
  type Webhook,
} from '../core/model.ts';
import { decideAttempt } from '../core/outcome.ts';
import { redactedUrl } from '../core/redact.ts';
import { deliveryHeaders } from '../core/signing.ts';
import { actionForWebhook, liftRecheck, releasedSince, releaseLookAt, releaseStepEndsBy } from '../core/switches.ts';
import { type LoggerPort, LogTally, type MetricsPort } from '../core/telemetry.ts';

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
  readonly records: DeliveryRecords;
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

/** How often a healthy endpoint's last success time is written at most. */
const SUCCESS_WRITE_INTERVAL_MS = 60_000;
/** Held items a release step reads at once (DynamoDB's 1 MB page may give fewer). */
const RELEASE_PAGE = 500;
/** How long a held count may find nothing held before it is taken as drifted (a hold's two writes take milliseconds). */
const HELD_COUNT_SETTLE_MS = 30_000;
/**
 * How often a container logs that a webhook's deliveries go past its held cap: often
 * enough that the window of an `events-rejected-or-dropped` alarm holds a line naming
 * the webhook (its metric cannot), seldom enough that a flood past the cap is not a
 * flood of logs.
 */
const OVERFLOW_LOG_INTERVAL_MS = 60_000;
/** When this container last logged each webhook's overflow. */
const overflowLog = new LogTally(OVERFLOW_LOG_INTERVAL_MS);
/**
 * When this container last logged each webhook's deliveries given shares far ahead, and
 * how many since: once a minute, as for overflow, so the window of the
 * `endpoint-backlog-far-ahead` alarm holds a line naming the webhook.
 */
const farAheadLog = new LogTally(OVERFLOW_LOG_INTERVAL_MS);

export async function handleDeliverMessage(deps: DeliveryDeps, message: DeliverQueueMessage): Promise<DeliveryOutcome> {
  switch (message.kind) {
    case 'probe':
      return probe(deps, message);
    case 'release':
      return release(deps, message);
    case 'recheck':
      return recheck(deps, message);
    case 'check':
      return check(deps, message);
    default:
      return deliver(deps, message);
  }
}

function context(m: { tenantId: string; webhookId: string; deliveryId?: string }) {
  return { tenant: m.tenantId, webhook: m.webhookId, ...(m.deliveryId && { delivery: m.deliveryId }) };
}

/**
 * A dead letter's log fields: its delivery, and the ids of its events and their resources.
 * On-call is paged for it with the admin key, which cannot list a tenant's dead letters,
 * and tells the tenant from this line which events of which resources it did not get.
 */
function deadLetterContext(message: DeliveryMessage) {
  return {
    ...context(message),
    attempt: message.attempt,
    events: message.events.map((e) => e.id),
    resources: [...new Set(message.events.map((e) => e.resource))],
  };
}

/** A delivery to a webhook its owner deleted: the owner's doing, not an incident, so counted apart from what pages on-call. */
function dropForDeleted(deps: DeliveryDeps, message: DeliveryMessage): 'dropped' {
  // Events only: a gap marker's events were counted when they were dropped.
  const events = eventCount(message.events);
  if (events > 0) deps.metrics.count('EventsDiscardedByOwner', events, { reason: 'webhook_deleted' });
  deps.logger.info('Delivery dropped: webhook deleted', { ...context(message), events: message.events.length });
  return 'dropped';
}

/**
 * Counts one resource's events for gap markers instead of delivering them, each under
 * `reason`; a gap marker among them under its own reason, for the events it stands for.
 * Once per delivery, however often SQS hands it back (see `countOverflowOnce`). Answers
 * how many of its events (not markers, counted when they were dropped) this call counted,
 * for the metrics: none when an earlier receive of the delivery counted them.
 */
async function countForGaps(
  deps: DeliveryDeps,
  webhookId: string,
  message: Pick<DeliveryMessage, 'deliveryId' | 'events'>,
  reason: Parameters<typeof gapCounts>[1],
  now: number,
): Promise<number> {
  const resource = message.events[0]?.resource ?? '';
  let events = 0;
  for (const count of gapCounts(message.events, reason)) {
    const counted = await deps.records.countOverflowOnce(message.deliveryId, webhookId, resource, count.dropped, now, count.reason);
    // The events are all in the count of `reason` (with any marker of that reason).
    if (counted && count.reason === reason) events = eventCount(message.events);
  }
  return events;
}

/** Whether the webhook was deleted since it was read (a consistent read). */
async function deletedSince(deps: DeliveryDeps, webhook: Webhook): Promise<boolean> {
  return (await deps.webhooks.get(webhook.tenantId, webhook.id)) === undefined;
}

/**
 * Sends a message again after `waitSeconds`, chaining SQS delays for longer waits. A
 * delivery keeps a share of its endpoint's pace (`share`) only when it is waiting for
 * that share: any other wait (Retry-After, a failing endpoint, a retry) ends with the
 * endpoint in another state, and a share kept through it would go out together with
 * every other one kept so.
 */
async function later(
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

/** The share of its endpoint's pace a delivery waits for, if that is what it waits for. */
function keptShare(message: DeliveryMessage): { sendAt: number; paceMs: number | undefined } | undefined {
  return message.sendAt === undefined ? undefined : { sendAt: message.sendAt, paceMs: message.paceMs };
}

/**
 * `delayCounted`: the delivery was counted as delayed for the endpoint's rate when it was
 * first given a share, and takes another only because the endpoint's time was given back.
 */
async function deliver(deps: DeliveryDeps, message: DeliveryMessage, delayCounted = false): Promise<DeliveryOutcome> {
  const now = deps.now();
  if (message.notBefore !== undefined && message.notBefore > now) {
    // A longer wait, chained: for a share of the pace too, if that is what it waits for,
    // unless the endpoint's time was given back since (a new URL, or quick answers after
    // slow ones): the share was reserved behind a backlog paced for slow answers, and one
    // taken now comes sooner. It looks at each link of the chain (half the wait left, for
    // a share: core/endpoint-pace.ts `paceLookSeconds`).
    const share = keptShare(message);
    if (share === undefined || !(await deps.records.paceGivenBack(message.webhookId, share.sendAt, now))) {
      await later(deps, message, (message.notBefore - now) / 1000, share);
      return 'waiting';
    }
    return deliver(deps, { ...message, notBefore: undefined, sendAt: undefined, paceMs: undefined }, true);
  }
  const webhook = await deps.webhooks.get(message.tenantId, message.webhookId);
  if (!webhook) return dropForDeleted(deps, message);
  if (webhook.noticePending) await tellOwner(deps, webhook, now);
  const action = actionForWebhook(await deps.switches.current(), webhook.tenantId, webhook.id);
  if (action === 'drop') {
    // Discarded and counted per resource; one gap marker each stands for them when the switch is lifted.
    for (const part of partsByResource(message)) {
      // A gap marker's events were counted when they were dropped, and a resource's events
      // of a delivery handed back by SQS when it was first: in the metric as soon as their
      // count is kept, since one handed back after a later resource's count failed finds
      // this one's receipt and counts nothing again.
      const events = await countForGaps(deps, webhook.id, part, 'switch_drop', now);
      if (events > 0) deps.metrics.count('EventsDropped', events, { reason: 'switch_drop' });
    }
    await expectLift(deps, webhook, now);
    return 'dropped';
  }
  const delivers = action === undefined && takesDeliveries(webhook);
  // A delivery that took its share of the endpoint's time before its backlog was held
  // (see `holdBehindPace`) goes at that share: the held ones are newer, and the chain that
  // releases them waits until the shares given before it are used (`releaseNotBefore`).
  // Not one behind what a quarantine or a pause held, whose chain waits for no share:
  // deliveries whose shares came due meanwhile, older than this one, are among those.
  const bookedBeforeHold =
    message.sendAt !== undefined && webhook.releaseNotBefore !== undefined && message.sendAt <= webhook.releaseNotBefore;
  if (!delivers || (webhook.heldCount > 0 && !bookedBeforeHold)) {
    // Quarantined, disabled, or still releasing older held deliveries: keep order by holding.
    if (action !== 'pause') await reviveLostChain(deps, webhook, message, now);
    // Behind a held backlog whose chain waits for a time that far ahead: it waits far too
    // (see `noteFarAhead`). Not for being held alone: a release chain ends only at a step
    // that finds nothing held, so with deliveries coming every few seconds
    // it holds each for a step (one POST, seconds) and goes on; each counted, a slow
    // endpoint that keeps up would keep the ticket filed once it held anything (a
    // quarantine, a pause, a backlog whose time came). Nor behind a chain that waits for
    // nothing (a quarantine's, a pause's), whatever the endpoint's time: it goes at the
    // chain's next POST. The chain's wait is on the webhook as read: no read of the pace
    // item, whose failure would fail the hold for a count.
    if (delivers && webhook.releaseNotBefore !== undefined) {
      const paceMs = paceIntervalFor(endpointRateOf(deps, webhook), webhook.slowMs);
      noteFarAhead(deps, webhook, webhook.releaseNotBefore - now, paceMs, now);
    }
    const outcome = await hold(deps, webhook, message, action === 'pause');
    if (action === 'pause') await expectLift(deps, webhook, now);
    return outcome;
  }
  if (webhook.notBefore !== undefined && webhook.notBefore > now) {
    // The endpoint asked to be left alone (Retry-After): every delivery waits, not
    // only the one that was answered 429/503, and waiting uses up no attempt.
    deps.metrics.count('DeliveriesDelayed', 1, { reason: 'retry_after' });
    await later(deps, message, (webhook.notBefore - now) / 1000);
    return 'throttled';
  }
  if (webhook.health.state === 'failing') {
    // A failing endpoint gets a single attempt per interval, so that one hanging
    // endpoint cannot hold many delivery workers before quarantine, and a tenant's
    // failing endpoints together a few, so that many hanging ones cannot either.
    const windowMs = deps.config.failingAttemptIntervalMs;
    const endpointSlot = await deps.records.takeSendSlot(webhook.id, 1, windowMs, now);
    const tenantSlot =
      endpointSlot && (await deps.records.takeSendSlot(`failing:${webhook.tenantId}`, deps.config.failingAttemptsPerTenant, windowMs, now));
    if (!tenantSlot) {
      deps.metrics.count('DeliveriesDelayed', 1, { reason: endpointSlot ? 'tenant_failing' : 'endpoint_failing' });
      // Longer each time in a row, so a failing endpoint's backlog does not go round the
      // shared deliver queue every interval; none of the retry budget is spent.
      const waits = message.failingWaits ?? 0;
      await later(deps, { ...message, failingWaits: waits + 1 }, failingWaitSeconds(windowMs, waits));
      return 'throttled';
    }
  } else {
    // A healthy endpoint gets its rate: this attempt reserves its share of the
    // endpoint's time once, and waits for it in the deliver queue if it is not now.
    // A share it was given is kept however late the deliver queue brings it back:
    // reserving again would put it behind every later one, and each share is taken once.
    // Of shares reserved at a quicker pace than the endpoint's now, only a part is kept,
    // though (core/endpoint-pace.ts `keepsShare`): the endpoint has answered more slowly
    // since, and a backlog given shares at its whole rate before the first slow answer
    // came back would otherwise all go at that rate, each POST holding a delivery worker
    // for as long as the endpoint takes to answer; the rest take shares again.
    const interval = paceIntervalFor(endpointRateOf(deps, webhook), webhook.slowMs);
    const kept =
      message.sendAt !== undefined && keepsShare(message.deliveryId, message.paceMs ?? interval, interval) ? keptShare(message) : undefined;
    if (kept === undefined && webhook.slowMs !== undefined) {
      // Before a share is taken: one taken and then not used would move the endpoint's
      // time on for nothing, and hold the next deliveries behind a backlog that is not there.
      const freeAt = await deps.records.paceFreeAt(webhook.id, now);
      if (freeAt !== undefined && holdsBehindPace(freeAt - now, webhook.slowMs))
        return holdBehindPace(deps, webhook, message, freeAt, interval, now);
    }
    const share = kept ?? { sendAt: await deps.records.reserveSend(webhook.id, interval, now), paceMs: interval };
    // A quick endpoint's share is taken before it is known to be far: the time is not read
    // first, as a slow one's is, for every delivery to pay a read for the rare backlog. The
    // release chain waits for this share, then its steps' POSTs take shares of their own
    // (`takeReleaseShares`): this one goes unused, a POST's share, once a backlog.
    if (kept === undefined && webhook.slowMs === undefined && holdsBehindPace(share.sendAt - now, undefined)) {
      return holdBehindPace(deps, webhook, message, share.sendAt, interval, now);
    }
    if (share.sendAt > now) {
      if (message.sendAt === undefined && !delayCounted) deps.metrics.count('DeliveriesDelayed', 1, { reason: 'endpoint_rate' });
      // A share taken now, not one kept, nor one taken again because the time was given
      // back (the endpoint answers quickly again; its backlog is counted once, as above).
      if (kept === undefined && !delayCounted) noteFarAhead(deps, webhook, share.sendAt - now, interval, now);
      await later(deps, message, (share.sendAt - now) / 1000, share);
      return 'throttled';
    }
  }
  // Its waits for a failing endpoint's attempt are over: a later one starts from the interval.
  const attempted: DeliveryMessage = message.failingWaits === undefined ? message : { ...message, failingWaits: undefined };
  const result = await attempt(deps, webhook, attempted);
  return decide(deps, webhook, attempted, result);
}

/**
 * A delivery given a share of its endpoint's time far ahead (core/endpoint-pace.ts
 * `pacedFarAhead`), or held behind a slow endpoint's backlog whose release waits that far
 * ahead (`waitMs`: to the endpoint's next free time, or to the chain's `releaseNotBefore`;
 * see `holdBehindPace`): the endpoint's
 * backlog outgrows its pace, and its subscriber gets events that late. Nothing fails, so
 * nothing else tells anyone until the held cap is passed: it is counted
 * (`DeliveriesPacedFarAhead`, no webhook in it: alarm `endpoint-backlog-far-ahead`), and
 * logged with the tenant and webhook at most once a minute per webhook and container,
 * with how many this container gave far shares or held so since its last line.
 */
function noteFarAhead(deps: DeliveryDeps, webhook: Webhook, waitMs: number, paceMs: number, now: number): void {
  if (!pacedFarAhead(waitMs)) return;
  deps.metrics.count('DeliveriesPacedFarAhead');
  const due = farAheadLog.note(webhook.id, now, { deliveries: 1 });
  if (!due) return;
  deps.logger.warn(`Deliveries wait over ${PACE_FAR_AHEAD_MS / 60_000} minutes for their endpoint's pace: its backlog outgrows it`, {
    ...context({ tenantId: webhook.tenantId, webhookId: webhook.id }),
    waitSeconds: Math.round(waitMs / 1000),
    paceMs: Math.round(paceMs),
    answerMs: webhook.slowMs,
    held: webhook.heldCount,
    ...due,
  });
}

/**
 * A delivery whose share of the endpoint's time would be too far ahead, at `freeAt`
 * (core/endpoint-pace.ts `holdsBehindPace`), is held in DynamoDB instead, as a quarantined
 * endpoint's are: a slow endpoint's taking no share, a quick one's leaving the share it
 * took (at `freeAt`) unused, the chain waiting for it. Capped at `heldPerWebhook` (past it, counted
 * for a gap marker, in `EventsHeldOverflow`), where waiting in the deliver queue nothing
 * bounded it. Every delivery after it is held too, while anything is; those given shares
 * before it still go at their shares (see `deliver`). The chain that releases the held
 * ones starts now but sends from `freeAt`, once the shares given before it are used, so
 * that the endpoint gets no more than its pace and each resource's events come in order;
 * sooner if the endpoint's time is given back (it answers quickly again). It releases
 * them in order, packed (up to 100 events a POST), up to MAX_IN_FLIGHT_PER_ENDPOINT POSTs
 * at once (see `releaseLanes`), and ends when nothing is held: deliveries then take shares again.
 */
async function holdBehindPace(
  deps: DeliveryDeps,
  webhook: Webhook,
  message: DeliveryMessage,
  freeAt: number,
  paceMs: number,
  now: number,
): Promise<DeliveryOutcome> {
  noteFarAhead(deps, webhook, freeAt - now, paceMs, now);
  // Before the hold, so that the hold finds the chain (see `releaseIfNoChain`). Of
  // concurrent starters one starts it: the start is conditional on the health read, and
  // the others read the webhook again and find its token. Also when the chain found holds
  // nothing and waits for no time as late (its last step sent all it held, and its next,
  // within a second, would end it): that step would send this one at once, before the
  // deliveries given shares before it (a quick endpoint's burst right after a release
  // drained takes 5 seconds of shares in a moment), over the endpoint's rate and out of
  // each resource's order. The new chain's token ends it.
  await onFreshWebhook(
    deps,
    webhook,
    async (current) => !(needsChain(current) || drainedChainEarlier(current, freeAt)) || beginRelease(deps, current, deps.now(), freeAt),
  );
  return hold(deps, webhook, { ...message, sendAt: undefined, paceMs: undefined, notBefore: undefined });
}

/** Whether a webhook's release chain holds nothing, on an endpoint that takes deliveries, and waits for no time as late as `freeAt`. */
function drainedChainEarlier(webhook: Webhook, freeAt: number): boolean {
  return (
    webhook.releaseToken !== undefined &&
    webhook.heldCount <= 0 &&
    takesDeliveries(webhook) &&
    (webhook.releaseNotBefore === undefined || webhook.releaseNotBefore < freeAt)
  );
}

/**
 * The endpoint's time was given back (it answers quickly again) while its webhook holds
 * deliveries (`webhook` as the attempt's delivery read it). A chain waiting for the shares
 * given before a slow backlog was held (see `holdBehindPace`) would send them only at its
 * next look, up to 15 minutes on, and every delivery meanwhile is held behind them, past
 * the held cap into gap markers, to an endpoint that takes them quickly now. A new chain
 * sends them at once (its token ends the waiting one). Not while a step of the chain may
 * still be sending (it began within a step's longest time): the new chain would send that
 * page again, and a chain stepping that often is releasing already. A chain's start and
 * its looks while it waits send nothing, and are noted as steps already ended (see
 * `release`), so they keep no new chain off. A failure is logged,
 * not thrown: the POST was made, and failing its delivery would make it again; the
 * waiting chain's next look sends them, or, if the new token was saved and its step not
 * sent, a chain revived for a delivery held behind them (see `reviveLostChain`).
 */
async function releaseGivenBack(deps: DeliveryDeps, webhook: Webhook): Promise<void> {
  if (webhook.heldCount <= 0) return;
  try {
    const fresh = await deps.webhooks.get(webhook.tenantId, webhook.id);
    if (!fresh) return;
    await onFreshWebhook(deps, fresh, async (current) => {
      if (current.releaseToken === undefined || current.heldCount <= 0) return true;
      if (!takesDeliveries(current)) return true;
      const now = deps.now();
      if (releaseStepEndsBy(current.releaseAt, deps.config.deliveryTimeoutMs, RECHECK_MARGIN_MS) > now) return true;
      return beginRelease(deps, current, now);
    });
  } catch (error) {
    deps.logger.warn("Endpoint's time given back, and its held deliveries not released at once", {
      ...context({ tenantId: webhook.tenantId, webhookId: webhook.id }),
      error: String(error),
    });
  }
}

/**
 * Signs, sends and logs one attempt. A delivery's first attempt is logged with
 * the delivery itself (its events, for replay), in one write; a replay's is not.
 */
async function attempt(
  deps: DeliveryDeps,
  webhook: Webhook,
  message: DeliveryMessage,
  options: { probe?: boolean } = {},
): Promise<SendResult> {
  const now = deps.now();
  const body = deliveryBody(webhook.id, message.events);
  const headers = deliveryHeaders(liveSecrets(webhook, now), message.deliveryId, Math.floor(now / 1000), body, SLUICE_VERSION);
  const watch = watchUnanswered(deps, webhook);
  let result: SendResult;
  try {
    result = await deps.send({ url: webhook.url, headers: { ...headers }, body, timeoutMs: deps.config.deliveryTimeoutMs });
  } finally {
    watch.stop();
  }
  // A wait in seconds (Retry-After) counts from the answer that asks for it, not from
  // when the POST began: an endpoint that took 8 s to answer "wait 5 s" gets its 5 s.
  const answeredAt = deps.now();
  const noted = await watch.noted();
  const record = {
    id: newId('att', now),
    delivery_id: message.deliveryId,
    attempt: message.attempt,
    status_code: result.statusCode ?? null,
    duration_ms: result.durationMs,
    error:
      result.error ??
      (result.statusCode !== undefined && (result.statusCode < 200 || result.statusCode > 299) ? `HTTP ${result.statusCode}` : null),
    at: new Date(now).toISOString(),
  };
  // A replay's delivery: its events are in the log at their first delivery already.
  if (message.attempt === 1 && !options.probe && !message.replay) await deps.records.logDelivery(message, now, record);
  else await deps.records.recordAttempt(webhook.id, record, now);
  deps.metrics.count('DeliveryAttempts', 1, { result: decideAttempt(result.statusCode) });
  // A slow endpoint's pace follows its answer time (core/endpoint-pace.ts), and the wait
  // this POST was noted for while it went unanswered is kept already.
  const kept = noted === undefined ? webhook.slowMs : Math.max(noted, webhook.slowMs ?? 0);
  const slow = slowAfterAnswer(kept, result.durationMs, decideAttempt(result.statusCode) === 'delivered');
  if (slow !== undefined && slowAnswerChanged(kept, slow)) {
    await deps.webhooks.noteSlowAnswers(webhook.tenantId, webhook.id, webhook.url, slow);
    if (kept === undefined) logSlow(deps, webhook, { answerMs: slow });
  } else if (slow === undefined && kept !== undefined) {
    // Slow no more: its whole rate back, for the deliveries of its backlog too, which took
    // shares at the slow pace (each takes one again at its next look, see `deliver`). Only
    // by the answer that forgot the slowness: another quick answer to a POST sent while it
    // was slow would give back the time deliveries took at the whole rate since, and an
    // old URL's, the new URL's time.
    if (await deps.webhooks.forgetSlowAnswers(webhook.tenantId, webhook.id, webhook.url, kept)) {
      await deps.records.givePaceBack(webhook.id);
      await releaseGivenBack(deps, webhook);
    }
  }
  const askedSeconds = askedWaitSeconds(result.statusCode, result.retryAfter, answeredAt);
  if (askedSeconds !== undefined) {
    await deps.webhooks.leaveAloneUntil(webhook.tenantId, webhook.id, answeredAt + askedSeconds * 1000, webhook.url);
  }
  return result;
}

function logSlow(deps: DeliveryDeps, webhook: Webhook, how: { answerMs: number | undefined } | { unansweredMs: number }): void {
  deps.logger.warn('Endpoint answers slowly: its deliveries now go at a pace set by its answer time', {
    tenant: webhook.tenantId,
    webhook: webhook.id,
    ...how,
  });
}

/**
 * Watches a POST under way for an endpoint that has started to hang: unanswered after
 * `unansweredNoteAfter`, and again after each doubling of that wait, the endpoint is
 * noted as at least that slow, so that the deliveries after it take the slow pace at
 * once rather than once this one times out. `noted` answers the longest wait it noted
 * (undefined: none), after any write still under way; a write that fails is logged, and
 * the answer notes the time again.
 */
function watchUnanswered(deps: DeliveryDeps, webhook: Webhook): { stop(): void; noted(): Promise<number | undefined> } {
  let noted: number | undefined;
  let writing: Promise<void> = Promise.resolve();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const noteAt = (waitMs: number, sinceMs: number) => {
    timer = setTimeout(() => {
      writing = writing.then(async () => {
        try {
          if (!(await deps.webhooks.noteUnanswered(webhook.tenantId, webhook.id, webhook.url, waitMs))) return;
          noted = waitMs;
          if (webhook.slowMs === undefined && waitMs === unansweredNoteAfter(undefined)) logSlow(deps, webhook, { unansweredMs: waitMs });
        } catch (error) {
          deps.logger.warn('Could not note an endpoint slow while its POST went unanswered', {
            tenant: webhook.tenantId,
            webhook: webhook.id,
            error: String(error),
          });
        }
      });
      noteAt(2 * waitMs, waitMs);
    }, waitMs - sinceMs);
  };
  noteAt(unansweredNoteAfter(webhook.slowMs), 0);
  return {
    stop: () => clearTimeout(timer),
    noted: async () => {
      await writing;
      return noted;
    },
  };
}

function failureOf(result: SendResult): AttemptFailure {
  if (result.statusCode === 429) return { kind: 'throttled', retryAfter: result.retryAfter };
  if (result.statusCode === 503) return { kind: 'status', retryAfter: result.retryAfter };
  if (result.statusCode !== undefined) return { kind: 'status' };
  if (result.error?.startsWith('no answer')) return { kind: 'timeout' };
  return { kind: 'connection' };
}

function describe(result: SendResult): string {
  return result.statusCode !== undefined ? `HTTP ${result.statusCode}` : (result.error ?? 'no answer');
}

/** What an attempt's result means: delivered, disable, hold, retry later, or dead letter. */
async function decide(deps: DeliveryDeps, webhook: Webhook, message: DeliveryMessage, result: SendResult): Promise<DeliveryOutcome> {
  const now = deps.now();
  switch (decideAttempt(result.statusCode)) {
    case 'delivered':
      // Events only: a gap marker stands for events counted when they were dropped.
      deps.metrics.count('EventsDelivered', eventCount(message.events));
      await applyHealth(deps, webhook, { type: 'success', now });
      return 'delivered';
    case 'disable': {
      const updated = await applyHealth(deps, webhook, { type: 'gone', now, statusCode: 410 });
      // Held as attempted: its release is its next attempt (and is not logged as a first one).
      await hold(deps, updated, { ...message, attempt: message.attempt + 1 });
      return 'disabled';
    }
    case 'retry': {
      const asked = askedWaitSeconds(result.statusCode, result.retryAfter, now);
      if (asked !== undefined && waitsFree(message)) {
        // The endpoint asked to wait (`attempt` left it alone for that long): not a
        // failure, and none of the retry budget spent (SPEC §2: time throttled does not
        // use it up). This delivery goes again once the wait is over, as its next attempt.
        deps.metrics.count('DeliveriesDelayed', 1, { reason: 'retry_after' });
        await later(deps, afterFreeWait(message), asked);
        return 'throttled';
      }
      const updated = await applyHealth(deps, webhook, { type: 'failure', now, statusCode: result.statusCode, error: describe(result) });
      if (!deliversTo(updated.health)) return hold(deps, updated, { ...message, attempt: message.attempt + 1 });
      const wait = nextAttemptWait(deps, message, result, now);
      if (wait === undefined) {
        // Deleted while this attempt waited for its answer: no dead letter (nor a page) for a webhook that is gone.
        if (await deletedSince(deps, webhook)) return dropForDeleted(deps, message);
        // Counted once: a last attempt that SQS delivers again finds its dead letter written.
        if (await deps.records.deadLetter(message, describe(result), now)) {
          deps.metrics.count('DeadLetters');
          deps.metrics.count('EventsDeadLettered', eventCount(message.events));
          deps.logger.warn('Delivery dead-lettered after its last attempt', deadLetterContext(message));
        }
        return 'dead_lettered';
      }
      await later(deps, { ...message, attempt: message.attempt + 1 }, wait);
      deps.metrics.count('DeliveriesRetried');
      return 'retrying';
    }
  }
}

/** How long a delivery waits after this failed attempt (the retry schedule), or undefined after its last. */
function nextAttemptWait(deps: DeliveryDeps, message: DeliveryMessage, result: SendResult, now: number): number | undefined {
  return retryDelaySeconds(
    { scheduleSeconds: deps.config.retryScheduleSeconds, jitter: deps.config.retryJitter },
    attemptsSpent(message),
    failureOf(result),
    now,
    deps.random,
  );
}

/**
 * Holds a delivery in DynamoDB within the cap; past it, its events are counted for
 * a gap marker. A delivery with several resources' events is held as one part per
 * resource, since release goes per resource in seq order. `underSwitch`: held by a
 * pause, whose lift releases it.
 */
async function hold(deps: DeliveryDeps, webhook: Webhook, message: DeliveryMessage, underSwitch = false): Promise<DeliveryOutcome> {
  const parts = partsByResource(message);
  const counted =
    parts.length > 1 ? await deps.webhooks.countHeld(webhook.tenantId, webhook.id, parts.length, deps.config.heldPerWebhook) : undefined;
  if (counted) {
    // One count for all the parts; a part that was already held (SQS delivers at
    // least once) gives its place back, so the count always matches the held items.
    const now = deps.now();
    const fresh = await Promise.all(parts.map((part) => deps.records.hold(part, now)));
    const already = fresh.filter((f) => !f).length;
    if (already > 0) await deps.webhooks.adjustHeld(webhook.tenantId, webhook.id, -already);
    if (already < parts.length) deps.metrics.count('DeliveriesHeld', parts.length - already);
    // Held before too: see holdPart.
    if (!underSwitch) await releaseIfNoChain(deps, counted, message);
    return 'held';
  }
  // One part, or too near the cap for all of them: part by part.
  for (const part of parts) await holdPart(deps, webhook, part, underSwitch);
  return 'held';
}

async function holdPart(deps: DeliveryDeps, webhook: Webhook, message: DeliveryMessage, underSwitch: boolean): Promise<void> {
  const now = deps.now();
  // The count goes up first (the cap is checked there); a delivery that was already
  // held gives its place back, so the count always matches the held items.
  let counted = await deps.webhooks.countHeld(webhook.tenantId, webhook.id, 1, deps.config.heldPerWebhook);
  if (!counted && (await pruneExpiredHeld(deps, webhook, now))) {
    counted = await deps.webhooks.countHeld(webhook.tenantId, webhook.id, 1, deps.config.heldPerWebhook);
  }
  if (counted) {
    if (await deps.records.hold(message, now)) deps.metrics.count('DeliveriesHeld');
    else await deps.webhooks.adjustHeld(webhook.tenantId, webhook.id, -1);
    // Also when it was held before: SQS hands a delivery back when its record failed after
    // the hold, before it saw to a chain (a pause's recheck SQS refused, say, under a
    // switch lifted meanwhile). The lift's release may have ended before that hold, and
    // nothing else would send it: a later delivery's hold, if one ever comes.
    if (!underSwitch) await releaseIfNoChain(deps, counted, message);
    return;
  }
  // Refused for a webhook deleted since it was read (the count's write needs the webhook),
  // e.g. while this delivery waited for an answer that holds it: not an overflow that pages
  // on-call, nor a count owing a gap marker that nobody will ever be sent.
  if (await deletedSince(deps, webhook)) {
    dropForDeleted(deps, message);
    return;
  }
  // A gap marker's events were counted when they were dropped: only events count here,
  // and only once (a delivery handed back by SQS was counted when it was first).
  const events = await countForGaps(deps, webhook.id, message, 'held_overflow', now);
  if (events === 0) return;
  // Past the cap of a webhook its owner disabled: their choice, counted apart from what pages on-call.
  if (webhook.status === 'disabled' && webhook.health.disabledReason === 'by_owner') {
    deps.metrics.count('EventsDiscardedByOwner', events, { reason: 'disabled_overflow' });
    return;
  }
  // Past the cap of a webhook sluice disabled (its endpoint answered 410, or stayed
  // quarantined for days): webhook-disabled alarmed once and its owner was told; what follows
  // is the consequence that alarm already announced. Counted as EventsHeldOverflow, a busy
  // resource's would hold events-rejected-or-dropped in alarm for as long as its producer writes,
  // for days, and on-call has no lever on it (a pause or a drop switch pages the same).
  if (webhook.status === 'disabled') {
    deps.metrics.count('EventsDiscardedWhileDisabled', events, { reason: webhook.health.disabledReason ?? 'unknown' });
    return;
  }
  deps.metrics.count('EventsHeldOverflow', events);
  if (overflowLog.note(webhook.id, now)) {
    deps.logger.warn('Deliveries past the held cap: counted for a gap marker, not held', {
      ...context({ tenantId: webhook.tenantId, webhookId: webhook.id }),
      resource: message.events[0]?.resource ?? '',
      held_cap: deps.config.heldPerWebhook,
      state: webhook.health.state,
      // A healthy endpoint's held backlog is a slow one's (see `holdBehindPace`), or a pause's.
      ...(webhook.slowMs !== undefined && { answerMs: webhook.slowMs }),
      ...(underSwitch && { switch: 'pause' }),
    });
  }
}

/**
 * Applies a health event, retrying on a concurrent writer, and acts on the
 * transition: entering quarantine starts the probes, leaving it starts the
 * release, being disabled tells the owner.
 */
export async function applyHealth(deps: DeliveryDeps, webhook: Webhook, event: HealthEvent): Promise<Webhook> {
  const policy = deps.config;
  // An endpoint's answer (or its silence) is about the URL it came from, `webhook`'s: one
  // that comes after the owner moved the webhook to another URL is not the new URL's.
  const answeredBy = ANSWERS.has(event.type) ? webhook.url : undefined;
  let current = webhook;
  for (let attempt = 0; attempt < 8; attempt++) {
    if (answeredBy !== undefined && current.url !== answeredBy) return current;
    const before = current.health;
    const after = nextHealth(before, event, policy);
    if (after === before) return current;
    const quietSuccess =
      event.type === 'success' &&
      before.state === 'healthy' &&
      before.consecutiveFailures === 0 &&
      before.lastSuccessAt !== undefined &&
      event.now - Date.parse(before.lastSuccessAt) < SUCCESS_WRITE_INTERVAL_MS;
    if (quietSuccess) return current;
    const entersQuarantine = after.state === 'quarantined' && before.state !== 'quarantined';
    const recovers = startsRelease(before, after, event, current.heldCount);
    const disables = after.state === 'disabled' && before.state !== 'disabled';
    // A new probe chain on entering quarantine; the token is removed on leaving it.
    const probeToken = entersQuarantine
      ? newId('msg', event.now)
      : after.state !== 'quarantined' && current.probeToken !== undefined
        ? null
        : undefined;
    const releaseToken = recovers ? newId('msg', event.now) : undefined;
    const status = disables ? ('disabled' as const) : event.type === 'reenabled' ? ('active' as const) : undefined;
    // A notice owed to the owner is saved with the state that owes it, so that losing
    // the SNS publish after this write cannot lose the notice (see `tellOwner`).
    const noticePending =
      disables && after.disabledReason !== 'by_owner' ? true : current.noticePending && after.state !== 'disabled' ? null : undefined;
    const saved = await deps.webhooks.saveHealth(current, after, {
      ...(status && { status, updatedAt: new Date(event.now).toISOString() }),
      ...(probeToken !== undefined && { probeToken }),
      ...(releaseToken && { releaseToken, releaseAt: event.now, releaseNotBefore: null }),
      ...(noticePending !== undefined && { noticePending }),
      ...(answeredBy !== undefined && { url: answeredBy }),
    });
    if (!saved) {
      const fresh = await deps.webhooks.get(current.tenantId, current.id);
      if (!fresh) return current;
      current = fresh;
      continue;
    }
    const updated: Webhook = {
      ...current,
      health: after,
      healthVersion: current.healthVersion + 1,
      ...(status && { status, updatedAt: new Date(event.now).toISOString() }),
      ...(probeToken && { probeToken }),
      ...(releaseToken && { releaseToken }),
      noticePending: noticePending === true,
    };
    const ctx = { tenant: current.tenantId, webhook: current.id, from: before.state, to: after.state };
    // What the endpoint last answered: on-call's admin key cannot read the webhook's health.
    const failures = { consecutive_failures: after.consecutiveFailures, last_failure: after.lastFailure ?? null };
    if (entersQuarantine && probeToken) {
      deps.metrics.count('WebhooksQuarantined');
      deps.logger.warn('Endpoint quarantined', { ...ctx, ...failures });
      await later(
        deps,
        { kind: 'probe', tenantId: current.tenantId, webhookId: current.id, token: probeToken },
        after.probeIntervalSeconds ?? 60,
      );
    }
    if (recovers && releaseToken) {
      deps.metrics.count('WebhooksRecovered');
      deps.logger.info('Endpoint recovered; releasing held deliveries', ctx);
      await deps.queue.send([{ kind: 'release', tenantId: current.tenantId, webhookId: current.id, token: releaseToken }]);
    }
    if (disables) {
      // The webhook-disabled alarm pages when sluice disables an endpoint, not when its owner does.
      if (after.disabledReason === 'by_owner') deps.metrics.count('WebhooksDisabledByOwner');
      else deps.metrics.count('WebhooksDisabled', 1, { reason: after.disabledReason ?? 'unknown' });
      deps.logger.warn('Webhook disabled', { ...ctx, reason: after.disabledReason, ...failures });
      if (noticePending === true) await tellOwner(deps, updated, event.now);
    }
    return updated;
  }
  if (event.type === 'success' || event.type === 'failure') {
    // Other answers of the endpoint won every write (many arriving at once): this one's
    // change is left out, and the answers after it decide. Its POST was made; failing
    // the record would make it again, a duplicate, after the visibility timeout.
    deps.metrics.count('HealthWritesGivenUp');
    return current;
  }
  throw new Error('Could not save the webhook health after repeated conflicts');
}

/** The health events that an endpoint's answer makes (the others are its owner's). */
const ANSWERS: ReadonlySet<HealthEvent['type']> = new Set(['success', 'failure', 'gone', 'probe_succeeded', 'probe_failed']);

/** The token of a probe message sent for an owed notice only: no probe chain has it. */
const NOTICE_AGAIN_TOKEN = 'notice';
/** When an owed notice is tried again: past a claim's minute (NOTICE_CLAIM_MS), should its release have failed too. */
const NOTICE_AGAIN_SECONDS = 90;

/**
 * Tells the owner that sluice disabled their webhook. The notice is owed on the
 * webhook from the write that disabled it until it is sent; whoever claims it sends it
 * (one claimer at a time, for a minute, and only while the webhook is still disabled),
 * as the claim read it: the webhook may have been enabled and disabled again since
 * `webhook` was read. A send that fails gives its claim up and sends a message that
 * comes back to try again (or the next delivery to the webhook does); a sender that
 * dies lets it run out, and SQS brings its message back to try again. Either ends only its
 * own claim, so a late sender of an earlier disable's notice cannot take a later one's
 * for sent. A failure is counted and logged, never thrown: holding the delivery matters
 * more than the notice.
 */
async function tellOwner(deps: DeliveryDeps, webhook: Webhook, now: number): Promise<void> {
  const ctx = context({ tenantId: webhook.tenantId, webhookId: webhook.id });
  let claimed: Awaited<ReturnType<DeliveryDeps['webhooks']['claimNotice']>>;
  try {
    claimed = await deps.webhooks.claimNotice(webhook.tenantId, webhook.id, now);
  } catch (error) {
    deps.logger.error('Disable notice could not be claimed; owed still', { ...ctx, error });
    await tellOwnerLater(deps, webhook);
    return;
  }
  if (!claimed) return;
  const { claim, webhook: disabled } = claimed;
  try {
    await deps.notifier.webhookDisabled({
      type: 'webhook.disabled',
      tenant: disabled.tenantId,
      webhook: disabled.id,
      // The topic's subscribers (a relay, a chat integration) are not all the owner.
      url: redactedUrl(disabled.url),
      reason: disabled.health.disabledReason ?? 'unknown',
      last_error: disabled.health.lastFailure ?? null,
      at: disabled.health.lastFailure?.at ?? new Date(now).toISOString(),
    });
  } catch (error) {
    deps.metrics.count('DisableNoticesFailed');
    deps.logger.error('Disable notice not sent; owed again', { ...ctx, error });
    await deps.webhooks.oweNoticeAgain(webhook.tenantId, webhook.id, claim).catch(() => undefined);
    await tellOwnerLater(deps, webhook);
    return;
  }
  // Sent: owed no more. Should this write fail, the claim runs out and the owner hears twice.
  await deps.webhooks.noticeSent(webhook.tenantId, webhook.id, claim).catch((error: unknown) => {
    deps.logger.error('Disable notice sent, but not marked sent: it may go twice', { ...ctx, error });
  });
}

/**
 * A disabled webhook gets no probes, and a quiet one no deliveries either: a message
 * comes back for an owed notice (a probe's, of a token no chain has: `probe` sends what
 * is owed before it looks at its token), and, failing again, sends the next.
 */
async function tellOwnerLater(deps: DeliveryDeps, webhook: Webhook): Promise<void> {
  const again: ProbeMessage = { kind: 'probe', tenantId: webhook.tenantId, webhookId: webhook.id, token: NOTICE_AGAIN_TOKEN };
  await deps.queue.send([again], NOTICE_AGAIN_SECONDS).catch((error: unknown) => {
    deps.logger.error('Disable notice owed, and nothing sent to try it again: the next delivery to the webhook sends it', {
      ...context({ tenantId: webhook.tenantId, webhookId: webhook.id }),
      error,
    });
  });
}

/**
 * How long a probe may be overdue, or a release chain go without a step, before the
 * chain counts as lost. Longer than any wait a live chain makes (SQS delays a message
 * 15 minutes at most; longer waits are chained through it).
 */
export const CHAIN_LOST_AFTER_MS = 20 * 60_000;

/**
 * A chain of probes or of release steps lives in the deliver queue: if a message of
 * it is lost (a send that failed after the state change was saved, or a message
 * dead-lettered), a quarantined webhook would never be probed again, or a healthy one
 * would hold every delivery behind what it already holds. Each delivery held for it
 * checks, and starts a new chain (a new token ends any old one) when the old one is
 * overdue by CHAIN_LOST_AFTER_MS more than this delivery itself waited since its
 * oldest event was accepted: a deliver queue that runs late makes the chain late too,
 * and reviving a live chain then would only push it to the back of that queue. A
 * probe that waits for the endpoint's Retry-After is not overdue before it ends.
 */
async function reviveLostChain(deps: DeliveryDeps, webhook: Webhook, message: DeliveryMessage, now: number): Promise<void> {
  const accepted = Math.min(...message.events.map((e) => Date.parse(e.created_at)).filter(Number.isFinite));
  const lostAfter = CHAIN_LOST_AFTER_MS + (Number.isFinite(accepted) ? Math.max(0, now - accepted) : 0);
  // Each start is conditional on the health read: refused because another container's
  // answer changed it meanwhile (a success written a minute after the last, a failure),
  // the webhook is read again and looked at anew; given up on that refusal, this delivery
  // would wait for a later one to notice the lost chain, and a quiet webhook's for good.
  // A reviver that got there first left a chain on time, which the look anew finds.
  await onFreshWebhook(deps, webhook, (current) => reviveChainOnce(deps, current, context(message), now, lostAfter));
}

/**
 * The reconciler's check of a webhook `by_chain` lists (webhook-store.ts `saveHealth`
 * lists every webhook a chain starts on, or that comes to owe a disable notice). A chain
 * lost with no delivery coming to notice it (see reviveLostChain) is started again here:
 * a quiet quarantined webhook would otherwise never be probed again, nor disabled, nor
 * its owner told, and what a lost release chain held would wait for the webhook's next
 * delivery, its gap markers with it. Lost means overdue by CHAIN_LOST_AFTER_MS more than
 * this check waited in the deliver queue: a queue that runs late makes the chains in it
 * late too. A switch in force stops a release on purpose (its lift starts one: `recheck`),
 * not a probe chain.
 * A notice still owed is sent. A webhook left with nothing to watch is unlisted.
 */
async function check(deps: DeliveryDeps, message: CheckMessage): Promise<DeliveryOutcome> {
  const now = deps.now();
  const webhook = await deps.webhooks.get(message.tenantId, message.webhookId);
  // A deleted webhook's item, and with it its listing, is gone: a check sent before that finds nothing.
  if (!webhook) return 'stale';
  if (webhook.noticePending) await tellOwner(deps, webhook, now);
  const chained = webhook.status === 'active' && (webhook.probeToken !== undefined || webhook.releaseToken !== undefined);
  if (!chained) {
    // A notice just sent is unlisted by the next check, which reads it sent.
    if (!webhook.noticePending) await deps.webhooks.unlistUnwatched(webhook.tenantId, webhook.id);
    return 'checked';
  }
  // A switch stops a release, not a probe chain (`probe` reads no switch): a probe chain
  // lost under a pause is started again all the same, or a quiet quarantined webhook
  // would go unprobed, and undisabled, for as long as the switch lasts.
  const releases = actionForWebhook(await deps.switches.current(), webhook.tenantId, webhook.id) === undefined;
  const lostAfter = CHAIN_LOST_AFTER_MS + Math.max(0, now - message.sentAt);
  await onFreshWebhook(deps, webhook, (current) => reviveChainOnce(deps, current, context(message), now, lostAfter, releases));
  return 'checked';
}

/**
 * Starts a chain that `webhook` shows lost (see reviveLostChain and `check`): a probe
 * chain overdue, or a release chain gone without a step, where something is held or a
 * chain was under way (one that owed only gap markers); false when its health changed
 * since it was read. `releases` false: a release chain is not started (a switch in force
 * stops one on purpose), a probe chain still is.
 */
async function reviveChainOnce(
  deps: DeliveryDeps,
  webhook: Webhook,
  ctx: ReturnType<typeof context>,
  now: number,
  lostAfter: number,
  releases = true,
): Promise<boolean> {
  const { health } = webhook;
  if (webhook.status !== 'active') return true;
  if (health.state === 'quarantined' && health.nextProbeAt !== undefined) {
    const due = Math.max(health.nextProbeAt, webhook.notBefore ?? 0);
    if (now - due <= lostAfter) return true;
    const token = newId('msg', now);
    const interval = health.probeIntervalSeconds ?? deps.config.probeIntervalMinSeconds;
    // Conditional on the health this read: of concurrent revivers, one starts a chain.
    if (!(await deps.webhooks.saveHealth(webhook, { ...health, nextProbeAt: now + interval * 1000 }, { probeToken: token }))) return false;
    deps.metrics.count('ChainsRevived', 1, { chain: 'probe' });
    deps.logger.warn('Probe chain was lost; probing again', ctx);
    await deps.queue.send([{ kind: 'probe', tenantId: webhook.tenantId, webhookId: webhook.id, token }]);
    return true;
  }
  // Once: of concurrent revivers, the one whose write applies starts the chain.
  const releasing = webhook.heldCount > 0 || webhook.releaseToken !== undefined;
  if (!releases || !deliversTo(health) || !releasing || now - (webhook.releaseAt ?? 0) <= lostAfter) return true;
  // A chain that waited for the end of the shares given before its backlog was held
  // (`releaseNotBefore`, see `holdBehindPace`) is started again waiting for it too: started
  // at once, it sent the backlog beside the deliveries given those shares, over the
  // endpoint's pace and ahead of older events of the same resources.
  if (!(await beginRelease(deps, webhook, now, webhook.releaseNotBefore))) return false;
  deps.metrics.count('ChainsRevived', 1, { chain: 'release' });
  deps.logger.warn('Release chain was lost; releasing again', ctx);
  return true;
}

/** Whether a webhook's endpoint is sent deliveries: the webhook is active, and its endpoint healthy or failing (not quarantined). */
function takesDeliveries(webhook: Webhook): boolean {
  return webhook.status === 'active' && deliversTo(webhook.health);
}

/** Whether a webhook that holds deliveries needs a release chain started: it has none, and its endpoint takes deliveries. */
function needsChain(webhook: Webhook): boolean {
  return webhook.releaseToken === undefined && takesDeliveries(webhook);
}

/**
 * A delivery is held on what it read of the webhook before it was counted: something
 * held, or the endpoint quarantined or disabled. If meanwhile the release chain ran out
 * (its last step found nothing held and ended), or the endpoint recovered and its whole
 * release ran, no chain would send this one: with no chain (its token gone), nothing but a later
 * delivery would notice, not even the reconciler's `check`, and a quiet webhook may have none. The count's own write
 * (`counted`) tells: an active endpoint that delivers, with no chain, gets one now. The
 * chain's start is conditional on the health that write read: another container's
 * answer may change the health in between (a success written a minute after the last, a
 * failure), and then the webhook is read again and looked at anew, as `startRelease`
 * does; given up on that refusal, nothing would send this delivery.
 */
async function releaseIfNoChain(deps: DeliveryDeps, counted: Webhook, message: DeliveryMessage): Promise<void> {
  await onFreshWebhook(deps, counted, async (current) => {
    if (!needsChain(current)) return true;
    if (!(await beginRelease(deps, current, deps.now()))) return false;
    deps.metrics.count('ChainsRevived', 1, { chain: 'release_ended' });
    deps.logger.info('Held after the release chain ended; releasing again', context(message));
    return true;
  });
}

/** The SQS delay of a waiting release chain's next look at its time `notBefore` (core/endpoint-pace.ts `paceLookSeconds`). */
function lookDelaySeconds(notBefore: number, now: number): number {
  return sqsDelay(paceLookSeconds((notBefore - now) / 1000)).delaySeconds;
}

/**
 * Starts a release chain on the webhook as read, with a token of its own (which ends
 * any older chain); false, starting nothing, when the webhook's health changed since.
 */
async function beginRelease(deps: DeliveryDeps, webhook: Webhook, now: number, notBefore?: number): Promise<boolean> {
  const token = newId('msg', now);
  const waits = notBefore !== undefined && notBefore > now;
  // A chain that waits for its time sends nothing now: noted as a step already ended, so
  // that the quick answer that gives the time back starts a new one (see `releaseGivenBack`).
  const releaseAt = waits ? releaseLookAt(now, deps.config.deliveryTimeoutMs, RECHECK_MARGIN_MS) : now;
  const releaseNotBefore = waits ? notBefore : null;
  if (!(await deps.webhooks.saveHealth(webhook, webhook.health, { releaseToken: token, releaseAt, releaseNotBefore }))) return false;
  const step = { kind: 'release' as const, tenantId: webhook.tenantId, webhookId: webhook.id, token };
  if (!waits) await deps.queue.send([step]);
  else await deps.queue.send([{ ...step, notBefore }], lookDelaySeconds(notBefore, now));
  return true;
}

/** Starts releasing what a webhook holds (and its gap markers), e.g. when a switch is lifted. */
export async function startRelease(deps: DeliveryDeps, webhook: Webhook): Promise<void> {
  await onFreshWebhook(deps, webhook, (current) => beginRelease(deps, current, deps.now()));
}

/**
 * Runs `act` on the webhook as read, and again on the webhook read afresh each time it
 * answers false (its write, conditional on the health it read, was refused: another
 * container's answer changed it meanwhile), up to 5 times, until the webhook is gone.
 */
async function onFreshWebhook(deps: DeliveryDeps, webhook: Webhook, act: (current: Webhook) => Promise<boolean>): Promise<void> {
  for (let attempt = 0, current: Webhook | undefined = webhook; current && attempt < 5; attempt++) {
    if (await act(current)) return;
    current = await deps.webhooks.get(current.tenantId, current.id);
  }
}

/** How far a recheck runs past the window it answers for: for the clocks of two workers, and a hold's item write. */
const RECHECK_MARGIN_MS = 1_000;

/**
 * A delivery held, or counted for a gap marker, under a pause or drop switch is
 * released by the release that lifting the switch starts. But this worker read the
 * switch through its cache, up to `switchCacheMs` old: after a lift, that release may
 * have ended before this hold, and nothing would release it, nor every delivery held
 * behind it, until new traffic revived a chain 20 minutes on (CHAIN_LOST_AFTER_MS).
 * So a hold under a switch asks for a recheck: a message delayed past the end of the
 * current window of `switchCacheMs`, which reads the switches afresh and, if the switch
 * is gone and no release has stepped since, starts one. One per webhook and window
 * (a conditional write, which a container that saw the window taken skips), so a
 * long pause costs one message per window and webhook, only that webhook's, and no
 * delivery pays anything while no switch is in force.
 *
 * Rather than reading the switches afresh before each hold: that is a read per held
 * delivery, all on the one partition every stage's switch cache reads (a pause of one
 * busy webhook would slow everyone's switch reads), and it still races the lift; and
 * rather than a reconciler sweep, which would be minutes late and read every webhook.
 */
async function expectLift(deps: DeliveryDeps, webhook: Webhook, now: number): Promise<void> {
  const windowMs = deps.config.switchCacheMs;
  if (!(await deps.records.takeOnce(`recheck:${webhook.id}`, windowMs, now))) return;
  // Past every hold of this window: the holds that found it taken are answered for too.
  const { heldBefore, delaySeconds } = liftRecheck(now, windowMs, RECHECK_MARGIN_MS);
  await deps.queue.send([{ kind: 'recheck', tenantId: webhook.tenantId, webhookId: webhook.id, heldBefore }], delaySeconds);
}

async function recheck(deps: DeliveryDeps, message: RecheckMessage): Promise<DeliveryOutcome> {
  const webhook = await deps.webhooks.get(message.tenantId, message.webhookId);
  if (!webhook) return 'stale';
  // Still in force: lifting it starts the release.
  if (actionForWebhook(await deps.switches.refresh(), webhook.tenantId, webhook.id) !== undefined) return 'stale';
  // Quarantined or disabled: a probe's success, or re-enabling, starts the release.
  if (!takesDeliveries(webhook)) return 'stale';
  // A release step that began after the holds saw them, and its chain goes on while anything is held or owed.
  if (releasedSince(webhook.releaseAt, message.heldBefore, RECHECK_MARGIN_MS)) return 'stale';
  // A chain that has not ended (an ended one removes its token), whose latest step began
  // before the holds, may still be sending its page: a chain started now would send that
  // page again, under other webhook-ids. Look again once that step has surely ended; if
  // its chain went on, its next step saw the holds.
  const now = deps.now();
  const stepEndsBy = releaseStepEndsBy(webhook.releaseAt, deps.config.deliveryTimeoutMs, RECHECK_MARGIN_MS);
  if (webhook.releaseToken !== undefined && stepEndsBy > now) {
    await deps.queue.send([message], sqsDelay((stepEndsBy - now) / 1000).delaySeconds);
    return 'waiting';
  }
  deps.metrics.count('ChainsRevived', 1, { chain: 'switch_lifted' });
  deps.logger.info('Held under a switch after it was lifted; releasing', context(message));
  await startRelease(deps, webhook);
  return 'released';
}

async function probe(deps: DeliveryDeps, message: ProbeMessage): Promise<DeliveryOutcome> {
  const now = deps.now();
  if (message.notBefore !== undefined && message.notBefore > now) {
    await later(deps, message, (message.notBefore - now) / 1000);
    return 'waiting';
  }
  const webhook = await deps.webhooks.get(message.tenantId, message.webhookId);
  // An owed notice SNS could not take comes back here (see `tellOwner`), as does a probe
  // that disabled the webhook (quarantine expired) and died before telling the owner.
  if (webhook?.noticePending) await tellOwner(deps, webhook, now);
  if (!webhook || webhook.probeToken !== message.token || webhook.health.state !== 'quarantined') return 'stale';
  if (webhook.notBefore !== undefined && webhook.notBefore > now) {
    await later(deps, message, (webhook.notBefore - now) / 1000);
    return 'waiting';
  }
  const ping = pingEvent(newId('evt', now), webhook.resource, now, { probe: true });
  const result = await attempt(
    deps,
    webhook,
    {
      deliveryId: newId('msg', now),
      tenantId: webhook.tenantId,
      webhookId: webhook.id,
      events: [ping],
      attempt: 1,
    },
    { probe: true },
  );
  deps.metrics.count('Probes', 1, { result: decideAttempt(result.statusCode) });
  if (decideAttempt(result.statusCode) === 'delivered') {
    await applyHealth(deps, webhook, { type: 'probe_succeeded', now });
    return 'probed';
  }
  if (result.statusCode === 410) {
    await applyHealth(deps, webhook, { type: 'gone', now, statusCode: 410 });
    return 'probed';
  }
  const updated = await applyHealth(deps, webhook, { type: 'probe_failed', now, statusCode: result.statusCode, error: describe(result) });
  if (updated.health.state === 'quarantined') {
    await later(deps, message, updated.health.probeIntervalSeconds ?? deps.config.probeIntervalMinSeconds);
  }
  return 'probed';
}

async function release(deps: DeliveryDeps, message: ReleaseMessage): Promise<DeliveryOutcome> {
  const now = deps.now();
  const webhook = await deps.webhooks.get(message.tenantId, message.webhookId);
  // A step that disabled the webhook (a 410) and died before telling the owner comes back here.
  if (webhook?.noticePending) await tellOwner(deps, webhook, now);
  if (!webhook || webhook.releaseToken !== message.token) return 'stale';
  if (!takesDeliveries(webhook)) return 'stale';
  // A chain for an endpoint's backlog held behind its pace (see `holdBehindPace`) whose
  // shares given before it are not all used yet: it looks again as a delivery waiting for its share does, and
  // goes at the look that finds the endpoint's time given back. The quick answer that gives
  // it back starts a new chain at once (see `releaseGivenBack`), as a new URL does, unless
  // a step of this one may be sending; a look sends nothing, so it is noted as a step that
  // has ended already, where noted as begun now it kept that start off for a step's
  // longest time after each look, and the backlog waited for the next look, minutes on.
  const looks =
    message.notBefore !== undefined && message.notBefore > now && !(await deps.records.paceGivenBack(webhook.id, message.notBefore, now));
  const stepAt = looks ? releaseLookAt(now, deps.config.deliveryTimeoutMs, RECHECK_MARGIN_MS) : now;
  // The chain is alive (see reviveLostChain); a newer chain took over if this is refused.
  if (!(await deps.webhooks.markReleaseStep(webhook.tenantId, webhook.id, message.token, stepAt))) return 'stale';
  if (looks && message.notBefore !== undefined) {
    await deps.queue.send([message], lookDelaySeconds(message.notBefore, now));
    return 'released';
  }
  // A paused webhook keeps holding; lifting the switch starts a new release. So does one
  // under a drop: nothing goes to it while the drop is in force (a webhook pause lifted
  // under a tenant drop, a probe's success), and its gap markers wait for the lift, one
  // each, rather than go out now (and, sent under the drop, be dropped and counted again).
  if (actionForWebhook(await deps.switches.refresh(), webhook.tenantId, webhook.id) !== undefined) return 'stale';
  if (webhook.notBefore !== undefined && webhook.notBefore > now) {
    // Left alone as the endpoint asked; the release goes on after (SQS delays a step 15 minutes at most: it looks again then).
    await deps.queue.send([{ ...message, emptySince: undefined }], sqsDelay((webhook.notBefore - now) / 1000).delaySeconds);
    return 'released';
  }
  // Held first attempts go out together, up to a delivery's limits (a backlog of
  // one-event parts would otherwise take a POST each); each resource keeps its order.
  // The endpoint's rate caps a step's POSTs, not its parts: a step capped at a page of
  // parts could not keep up with a webhook on a parent whose children change faster
  // than that, whose new deliveries are held behind the release until it ends, and
  // would fill the held cap (and drop into gap markers) with the endpoint healthy.
  // Groups of different resources go in lanes at once (core/deliveries.ts `releaseLanes`).
  const step: ReleaseStep = { posts: 0, startedAt: deps.now(), webhook };
  let stepped = false;
  for (let more = true; more && !step.stop && step.posts < endpointRateOf(deps, webhook) && releaseYoung(deps, step); ) {
    const page = await deps.records.heldPage(webhook.id, RELEASE_PAGE, now);
    if (page.expired.length > 0) await dropExpiredHeld(deps, webhook, page.expired, now, () => releaseYoung(deps, step));
    if (page.live.length > 0 || page.expired.length > 0) stepped = true;
    more = page.more && page.live.length + page.expired.length > 0;
    let offset = 0;
    const groups = packHeld(page.live.map((held) => held.message)).map((group) => {
      offset += group.length;
      return page.live.slice(offset - group.length, offset);
    });
    const lanes = releaseLanes(groups, (held) => held.message.events[0]?.resource ?? '', MAX_IN_FLIGHT_PER_ENDPOINT);
    const ends = await Promise.allSettled(lanes.map((lane) => releaseLane(deps, message, step, lane, now)));
    const thrown = ends.find((end) => end.status === 'rejected');
    if (thrown) throw thrown.reason;
    // What a lane left unsent stays held, before anything of its resources on the next page.
    if (ends.some((end) => end.status === 'fulfilled' && !end.value)) more = false;
  }
  await takeReleaseShares(deps, webhook, step.posts, now);
  const stop = step.stop;
  if (stop?.kind === 'stale') return 'stale';
  if (stop?.kind === 'failed') {
    if (deliversTo(stop.webhook.health)) await deps.queue.send([message], stop.delaySeconds);
    return 'released';
  }
  if (stop?.kind === 'wait') {
    await deps.queue.send([{ ...message, emptySince: undefined }], stop.delaySeconds);
    return 'released';
  }
  if (stepped) {
    // The next step a second later: at most a second's POSTs per second per endpoint.
    await deps.queue.send([{ ...message, emptySince: undefined }], 1);
    return 'released';
  }
  let fresh = await deps.webhooks.get(webhook.tenantId, webhook.id);
  if (!fresh) return 'stale';
  if (fresh.heldCount > 0) {
    // A hold is between its count and its write: look again shortly. A count that
    // finds nothing held for longer has drifted (see `dropLostHeld`).
    const emptySince = message.emptySince ?? now;
    if (now - emptySince < HELD_COUNT_SETTLE_MS) {
      await deps.queue.send([{ ...message, emptySince }], 1);
      return 'released';
    }
    const actual = await deps.records.heldItemCount(webhook.id);
    fresh = await dropLostHeld(deps, fresh, actual, now);
    if (actual > 0) {
      await deps.queue.send([{ ...message, emptySince: undefined }], 1);
      return 'released';
    }
  }
  // Nothing is held: the gap markers last, after every held delivery they follow.
  const lost = lostHeldCount(fresh);
  const owed = await deps.records.owedGaps(webhook.id, now);
  if (owed.length > 0 || lost) {
    // Each marker is sent before its count is cleared, with ids derived from the count:
    // a step that fails or dies in between leaves the count, and runs again (SQS
    // delivers the step again) to send the same marker, a duplicate its subscriber can
    // tell by its webhook-id, never none.
    await deps.queue.send([...owed, ...(lost ? [lost] : [])].map((count) => gapMarkerDelivery(webhook, count)));
    if (lost) await deps.webhooks.heldLostSent(webhook.tenantId, webhook.id, lost.dropped);
    const cleared = await Promise.all(owed.map((count) => deps.records.gapSent(webhook.id, count)));
    if (cleared.includes(false) || owed.length >= OWED_GAPS_PER_STEP) {
      // A count grew while its marker was out, or more are owed than a step sends: the
      // next step sends markers for the rest.
      await deps.queue.send([{ ...message, emptySince: undefined }], 1);
      return 'released';
    }
  }
  // The chain ends: its token goes, so a recheck knows no step of it is still sending.
  // Not while a delivery is counted as held (one that read the webhook while this chain
  // still held some, counted after this step looked): the chain goes on for it. (Refused
  // because a newer chain took over, the step sent stops at its markReleaseStep.)
  if (!(await deps.webhooks.endRelease(webhook.tenantId, webhook.id, message.token))) {
    await deps.queue.send([{ ...message, emptySince: undefined }], 1);
  }
  return 'released';
}

/** The POSTs a second the webhook's endpoint gets (core/endpoint-pace.ts `endpointRate`): its pace, its release steps', its replays'. */
export function endpointRateOf(deps: Pick<DeliveryDeps, 'config'>, webhook: Webhook): number {
  return endpointRate(deps.config.endpointRatePerSecond, webhook.ratePerSecond);
}

/**
 * A release step's POSTs take their shares of the endpoint's rate after them, as a
 * delivery's POST takes its share: deliveries that go once the chain has ended wait
 * behind them, where they took the endpoint's whole burst on top of the step's POSTs (a
 * quick endpoint's last step of 50 POSTs and then 50 deliveries at once). At the rate's
 * share, not a slow endpoint's longer one: the step's POSTs have all been answered by
 * now (its 10 lanes kept a slow one's under way to its pace), and a slow share taken
 * for a step on which the endpoint answered quickly, its time given back meanwhile, put
 * the time of an endpoint quick again up to 50 slow shares ahead (7.5 s at 1.5 s answers),
 * and held its next deliveries behind them (`holdsBehindPace`). One write a step; a
 * failure is logged, not thrown: the POSTs were made, and the step run again would not
 * make them again, but its next step would wait for SQS to bring this one back.
 */
async function takeReleaseShares(deps: DeliveryDeps, webhook: Webhook, posts: number, now: number): Promise<void> {
  if (posts <= 0) return;
  try {
    await deps.records.reserveSend(webhook.id, posts * paceInterval(endpointRateOf(deps, webhook)), now);
  } catch (error) {
    deps.logger.warn("A release step's POSTs took no share of the endpoint's time", {
      ...context({ tenantId: webhook.tenantId, webhookId: webhook.id }),
      posts,
      error: String(error),
    });
  }
}

/** A release step under way: its lanes share its POSTs (at most the endpoint's rate), its time, and how it stops. */
interface ReleaseStep {
  posts: number;
  readonly startedAt: number;
  /** The webhook as the step read it, for its first POST. */
  readonly webhook: Webhook;
  stop?: ReleaseStop;
}

/**
 * Why a release step stopped before it sent what it read: another chain took over, or the
 * webhook is disabled or no longer delivers (`stale`: the step sends nothing more and its
 * chain ends here); the endpoint asked to wait (`wait`, the next step after it); or a POST
 * failed (`failed`, the next step after a retry's wait if the endpoint still takes
 * deliveries, with the webhook as that failure left it).
 */
type ReleaseStop =
  | { readonly kind: 'stale' }
  | { readonly kind: 'wait'; readonly delaySeconds: number }
  | { readonly kind: 'failed'; readonly webhook: Webhook; readonly delaySeconds: number };

const STOP_RANK = { wait: 1, failed: 2, stale: 3 } as const;

/** Notes why a step stops: of its lanes' reasons, the gravest (stale, then failed, then wait), the longest wait, the latest failure. */
function stopStep(step: ReleaseStep, stop: ReleaseStop): void {
  const was = step.stop;
  if (was === undefined || STOP_RANK[stop.kind] > STOP_RANK[was.kind]) step.stop = stop;
  else if (stop.kind === 'failed' && was.kind === 'failed') step.stop = stop;
  else if (stop.kind === 'wait' && was.kind === 'wait' && stop.delaySeconds > was.delaySeconds) step.stop = stop;
}

/**
 * Whether a release step may still begin a POST: so even an endpoint answering each POST
 * just before the timeout cannot keep it past the function's own timeout.
 */
function releaseYoung(deps: DeliveryDeps, step: ReleaseStep): boolean {
  return deps.now() - step.startedAt < deps.config.deliveryTimeoutMs;
}

/**
 * Sends one lane of a release step (see `releaseLanes`), a group a POST, one after
 * another; true when it sent them all. It stops at the first group it does not send,
 * which stays held with the rest of the lane: the step is past the endpoint's rate or its
 * time, another lane stopped it, or this lane's POST was not taken (`stopStep`).
 */
async function releaseLane(
  deps: DeliveryDeps,
  message: ReleaseMessage,
  step: ReleaseStep,
  lane: readonly (readonly HeldDelivery[])[],
  now: number,
): Promise<boolean> {
  for (const items of lane) {
    if (step.stop || step.posts >= endpointRateOf(deps, step.webhook) || !releaseYoung(deps, step)) return false;
    // Counted before the read below, so that the lanes together keep to the rate; given
    // back if the read stops this lane before its POST, which then takes no share of the
    // endpoint's rate (`takeReleaseShares`).
    const first = step.posts === 0;
    step.posts += 1;
    let webhook = step.webhook;
    if (!first) {
      // Each POST with the webhook as it is now, not as the step found it (a step may
      // go on for the delivery timeout): a secret rotated meanwhile signs it too, as
      // every delivery after a rotation is signed, and one the owner disabled, or whose
      // release another chain took over (a new URL starts one), gets no more of this step.
      const fresh = await deps.webhooks.get(webhook.tenantId, webhook.id);
      if (!fresh || fresh.releaseToken !== message.token || !takesDeliveries(fresh)) {
        step.posts -= 1;
        stopStep(step, { kind: 'stale' });
        return false;
      }
      // Another lane's POST may have failed or been asked to wait while this one read.
      if (step.stop) {
        step.posts -= 1;
        return false;
      }
      webhook = fresh;
    }
    const delivery = releaseDelivery(items.map((held) => held.message));
    const result = await attempt(deps, webhook, delivery);
    if (decideAttempt(result.statusCode) === 'delivered') {
      const webhookId = webhook.id;
      // Only what this release removed leaves the count (a release that ran twice removes nothing).
      const removed = (await Promise.all(items.map((held) => deps.records.removeHeld(webhookId, held.sk)))).filter(Boolean).length;
      if (removed > 0) await deps.webhooks.adjustHeld(webhook.tenantId, webhook.id, -removed);
      deps.metrics.count('EventsDelivered', eventCount(delivery.events));
      deps.metrics.count('DeliveriesReleased', items.length);
      // A success, as any delivery's: it ends a failing state a failed step made, and notes when
      // the endpoint last took a delivery (at most once a minute), which after a re-enable only
      // release steps may show for a while.
      await applyHealth(deps, webhook, { type: 'success', now: deps.now() });
      continue;
    }
    const asked = askedWaitSeconds(result.statusCode, result.retryAfter, deps.now());
    if (asked !== undefined && items.every((held) => waitsFree(held.message))) {
      // The endpoint asked to wait (`attempt` left it alone for that long): an attempt of
      // each delivery sent, but no failure and none of their budgets spent. They stay
      // held as their next attempts, and the chain steps on once the wait is over.
      const webhookId = webhook.id;
      // Each noted with the delivery it was in, so that it goes again as that one (`packHeld`).
      const waitedIn = delivery.deliveryId;
      await Promise.all(items.map((held) => deps.records.holdAgain(webhookId, held.sk, { ...afterFreeWait(held.message), waitedIn })));
      stopStep(step, { kind: 'wait', delaySeconds: sqsDelay(asked).delaySeconds });
      return false;
    }
    // The endpoint failed again: count it; a new quarantine's probes will restart the release.
    const failed = await applyHealth(
      deps,
      webhook,
      result.statusCode === 410
        ? { type: 'gone', now, statusCode: 410 }
        : { type: 'failure', now, statusCode: result.statusCode, error: describe(result) },
    );
    await spendHeldAttempt(deps, failed, items, result, now);
    const wait = retryDelaySeconds({ scheduleSeconds: deps.config.retryScheduleSeconds, jitter: 0 }, 1, failureOf(result), now) ?? 5;
    stopStep(step, { kind: 'failed', webhook: failed, delaySeconds: Math.min(900, Math.max(1, wait)) });
    return false;
  }
  return true;
}

/**
 * A held count that found nothing held for HELD_COUNT_SETTLE_MS has drifted: it is set
 * to what is held, so deliveries stop being held behind nothing. What it counted beyond
 * that went without a release: DynamoDB's TTL deletes held items past the retention
 * period (of a webhook disabled or quarantined for longer) before a release reads them
 * (`dropExpiredHeld` counts those it finds). So they are counted as dropped for
 * `retention`, and noted on the webhook in the reset's own write (one caller counts
 * them), for a `sluice.gap` marker like other retention drops. A count that went up
 * twice for one hold (its item write failed, and SQS held it again), or whose decrement
 * died with its step, drifts the same way and is told the same: a marker that
 * overstates, rather than a loss told to no one. Answers the webhook as it is now.
 */
async function dropLostHeld(deps: DeliveryDeps, webhook: Webhook, actual: number, now: number): Promise<Webhook> {
  const ctx = context({ tenantId: webhook.tenantId, webhookId: webhook.id });
  const lost = webhook.heldCount - actual;
  if ((await deps.webhooks.resetHeld(webhook.tenantId, webhook.id, webhook.heldCount, actual, now)) && lost > 0) {
    // Deliveries, not events: what each held went with it (one event or more).
    deps.metrics.count('EventsDropped', lost, { reason: 'retention' });
    deps.logger.warn('Held deliveries gone without a release (past the retention period); counted as dropped', {
      ...ctx,
      counted: webhook.heldCount,
      held: actual,
    });
  }
  return (await deps.webhooks.get(webhook.tenantId, webhook.id)) ?? webhook;
}

/**
 * A release attempt failed: it was an attempt of each of its held deliveries, as the
 * endpoint's health now stands after it (`webhook`). Each one goes back to its retry
 * schedule, as any failed delivery does, and the release goes on without it: held, it
 * would be tried again at the release's next step, seconds later, and an endpoint that
 * answers its probes but fails its deliveries would use up the whole schedule in a
 * minute or two. It stays held as its next attempt only when this failure quarantined
 * or disabled the endpoint (as a delivery failing then is held), and is dead-lettered
 * when that was its last attempt, so one delivery the endpoint always refuses cannot
 * block the rest. (From then on it goes out alone: a merged body the endpoint refused,
 * e.g. too large, is not sent again.)
 */
async function spendHeldAttempt(
  deps: DeliveryDeps,
  webhook: Webhook,
  items: readonly HeldDelivery[],
  result: SendResult,
  now: number,
): Promise<void> {
  let left = 0;
  for (const held of items) {
    const next = { ...held.message, attempt: held.message.attempt + 1 };
    const wait = nextAttemptWait(deps, held.message, result, now);
    if (wait !== undefined && !deliversTo(webhook.health)) {
      await deps.records.holdAgain(webhook.id, held.sk, next);
      continue;
    }
    // Queued for its next attempt, or dead-lettered, before it leaves the held store: a
    // step that fails or dies between the two runs again and finds it still held, and
    // queues it again (a duplicate, never none) or finds its dead letter (keyed by the
    // delivery) written.
    if (wait !== undefined) await later(deps, next, wait);
    else await deps.records.deadLetter(held.message, describe(result), now);
    // Counted by the step whose removal applied (a step that ran twice removes nothing).
    if (!(await deps.records.removeHeld(webhook.id, held.sk))) continue;
    left += 1;
    if (wait !== undefined) {
      deps.metrics.count('DeliveriesRetried');
      continue;
    }
    deps.metrics.count('DeadLetters');
    deps.metrics.count('EventsDeadLettered', eventCount(held.message.events));
    deps.logger.warn('Held delivery dead-lettered after its last attempt', deadLetterContext(held.message));
  }
  if (left > 0) await deps.webhooks.adjustHeld(webhook.tenantId, webhook.id, -left);
}

/** How often, at most, a webhook whose held cap is full looks for held deliveries past the retention period (see pruneExpiredHeld). */
export const HELD_PRUNE_INTERVAL_MS = 10 * 60_000;

/**
 * Frees the places of held deliveries past the retention period, for a delivery the held
 * cap refused: a place is otherwise freed only by a release, so a webhook that held its
 * cap for longer than the retention period (disabled, or quarantined, for over 7 days)
 * held nothing it could still send, yet turned every new delivery into a gap marker's
 * count until its owner enabled it. Once every 10 minutes per webhook at most (a full cap
 * of live deliveries is read for nothing), for at most half a delivery's timeout (it
 * follows a record's attempt, and the delivery function's timeout allows two). Answers
 * whether any place was freed. In AWS, TTL may delete an expired item before this finds it: its
 * place stays taken until a release finds the count drifted (dropLostHeld).
 */
async function pruneExpiredHeld(deps: DeliveryDeps, webhook: Webhook, now: number): Promise<boolean> {
  if (!(await deps.records.takeOnce(`prune:${webhook.id}`, HELD_PRUNE_INTERVAL_MS, now))) return false;
  const startedAt = deps.now();
  const young = () => deps.now() - startedAt < deps.config.deliveryTimeoutMs / 2;
  const expired = await deps.records.expiredHeld(webhook.id, now, young);
  return (await dropExpiredHeld(deps, webhook, expired, now, young)) > 0;
}

/**
 * Held deliveries that outlived the retention period: not delivered. Removed from
 * the held count, counted, and each resource's share stands in a `sluice.gap`
 * marker (reason `retention`), sent at the end of the release. Answers how many it removed.
 */
async function dropExpiredHeld(
  deps: DeliveryDeps,
  webhook: Webhook,
  expired: readonly HeldDelivery[],
  now: number,
  young: () => boolean,
): Promise<number> {
  let removed = 0;
  let events = 0;
  for (const held of expired) {
    // Four writes each, one after another: a page of them could take a step past the
    // function's timeout. The rest stay held for the next step, which finds them first.
    if (!young()) break;
    // Counted for its marker before it leaves the held store: a step that fails between
    // the two runs again and finds it counted, and one that dies in the count may count
    // it again (a marker that overstates), never not at all. A held gap marker stands
    // for its own count, under its own reason.
    await countForGaps(deps, webhook.id, held.message, 'retention', now);
    if (!(await deps.records.removeHeld(webhook.id, held.sk))) continue;
    removed += 1;
    // A gap marker's events were counted when they were dropped.
    events += eventCount(held.message.events);
  }
  if (removed === 0) return 0;
  await deps.webhooks.adjustHeld(webhook.tenantId, webhook.id, -removed);
  if (events > 0) deps.metrics.count('EventsDropped', events, { reason: 'retention' });
  deps.logger.warn('Held deliveries outlived the retention period', {
    tenant: webhook.tenantId,
    webhook: webhook.id,
    deliveries: removed,
    events,
  });
  return removed;
}

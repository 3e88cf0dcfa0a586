/**
 * The delivery stage (SPEC §2 Delivery isolation, §3 Deliveries). Four kinds of
 * message arrive on the deliver queue:
 *
 * - a delivery (this file): signed and POSTed, or held while its endpoint is
 *   quarantined or disabled, or delayed when the endpoint's rate is spent; a failed
 *   attempt is retried on the schedule through SQS delays (chained past 15 minutes),
 *   and past the schedule it becomes a dead letter;
 * - a probe of a quarantined endpoint, on a doubling interval (delivery/probe.ts);
 * - a release step, sending a recovered endpoint's held deliveries in order at a
 *   capped rate (delivery/release.ts);
 * - a recheck, after deliveries were held or dropped under a kill switch, of whether
 *   the switch was lifted with nothing left to release them, and the reconciler's
 *   check of a listed webhook's chains (delivery/chains.ts).
 *
 * `decide` is the one place that says what an attempt's result means. The other parts:
 * delivery/deps.ts (what the stage is given, and the small helpers its parts share),
 * delivery/attempt.ts (one signed POST, and what its answer says of the endpoint's pace),
 * delivery/health.ts (an endpoint's health moving on, and the owner's notice),
 * delivery/held.ts (deliveries held in DynamoDB, the held cap and gap counts).
 */
import type { SendResult } from '../adapters/webhook-sender.ts';
import { askedWaitSeconds, failingWaitSeconds } from '../core/backoff.ts';
import { afterFreeWait, eventCount, partsByResource, waitsFree } from '../core/deliveries.ts';
import { holdsBehindPace, keepsShare, PACE_FAR_AHEAD_MS, pacedFarAhead, paceIntervalFor } from '../core/endpoint-pace.ts';
import { deliversTo } from '../core/health.ts';
import type { DeliverQueueMessage, DeliveryMessage, Webhook } from '../core/model.ts';
import { decideAttempt } from '../core/outcome.ts';
import { actionForWebhook } from '../core/switches.ts';
import { LogTally } from '../core/telemetry.ts';
import { attempt } from './delivery/attempt.ts';
import { beginRelease, check, expectLift, onFreshWebhook, recheck, reviveLostChain } from './delivery/chains.ts';
import {
  context,
  type DeliveryDeps,
  type DeliveryOutcome,
  deadLetterContext,
  deletedSince,
  describe,
  dropForDeleted,
  endpointRateOf,
  later,
  needsChain,
  nextAttemptWait,
  takesDeliveries,
  takeTenantFailingSlot,
} from './delivery/deps.ts';
import { applyHealth, tellOwner } from './delivery/health.ts';
import { countForGaps, hold, OVERFLOW_LOG_INTERVAL_MS } from './delivery/held.ts';
import { probe } from './delivery/probe.ts';
import { release } from './delivery/release.ts';

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
    if (share === undefined || !(await deps.paces.givenBack(message.webhookId, share.sendAt, now))) {
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
    const endpointSlot = await deps.sendBudgets.takeSlot(webhook.id, 1, windowMs, now);
    const tenantSlot = endpointSlot && (await takeTenantFailingSlot(deps, webhook.tenantId, now));
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
      const freeAt = await deps.paces.freeAt(webhook.id, now);
      if (freeAt !== undefined && holdsBehindPace(freeAt - now, webhook.slowMs))
        return holdBehindPace(deps, webhook, message, freeAt, interval, now);
    }
    const share = kept ?? { sendAt: await deps.paces.reserve(webhook.id, interval, now), paceMs: interval };
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
        if (await deps.deadLetters.add(message, describe(result), now)) {
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

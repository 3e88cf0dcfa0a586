/**
 * A release step: a recovered (or lifted, or caught-up) endpoint's held deliveries sent
 * in order, packed, in lanes per resource, at most the endpoint's rate a step, one step
 * a second; then the gap markers owed; then the chain ends.
 */
import { OWED_GAPS_PER_STEP } from '../../adapters/gap-counts.ts';
import type { HeldDelivery } from '../../adapters/held-deliveries.ts';
import type { SendResult } from '../../adapters/webhook-sender.ts';
import { askedWaitSeconds, retryDelaySeconds, sqsDelay } from '../../core/backoff.ts';
import {
  afterFreeWait,
  eventCount,
  gapMarkerDelivery,
  lostHeldCount,
  packHeld,
  releaseDelivery,
  releaseLanes,
  waitsFree,
} from '../../core/deliveries.ts';
import { MAX_IN_FLIGHT_PER_ENDPOINT, paceInterval } from '../../core/endpoint-pace.ts';
import { deliversTo } from '../../core/health.ts';
import type { ReleaseMessage, Webhook } from '../../core/model.ts';
import { decideAttempt } from '../../core/outcome.ts';
import { actionForWebhook, releaseLookAt } from '../../core/switches.ts';
import { attempt } from './attempt.ts';
import { lookDelaySeconds, RECHECK_MARGIN_MS } from './chains.ts';
import {
  context,
  type DeliveryDeps,
  type DeliveryOutcome,
  deadLetterContext,
  describe,
  endpointRateOf,
  failureOf,
  later,
  nextAttemptWait,
  takesDeliveries,
} from './deps.ts';
import { applyHealth, tellOwner } from './health.ts';
import { dropExpiredHeld } from './held.ts';

/** Held items a release step reads at once (DynamoDB's 1 MB page may give fewer). */
const RELEASE_PAGE = 500;

/** How long a held count may find nothing held before it is taken as drifted (a hold's two writes take milliseconds). */
const HELD_COUNT_SETTLE_MS = 30_000;

export async function release(deps: DeliveryDeps, received: ReleaseMessage): Promise<DeliveryOutcome> {
  const now = deps.now();
  const webhook = await deps.webhooks.get(received.tenantId, received.webhookId);
  // A step that disabled the webhook (a 410) and died before telling the owner comes back here.
  if (webhook?.noticePending) await tellOwner(deps, webhook, now);
  if (!webhook || webhook.releaseToken !== received.token) return 'stale';
  if (!takesDeliveries(webhook)) return 'stale';
  // A chain for an endpoint's backlog held behind its pace (see `holdBehindPace`) whose
  // shares given before it are not all used yet: it looks again as a delivery waiting for its share does, and
  // goes at the look that finds the endpoint's time given back. The quick answer that gives
  // it back starts a new chain at once (see `releaseGivenBack`), as a new URL does, unless
  // a step of this one may be sending; a look sends nothing, so it is noted as a step that
  // has ended already, where noted as begun now it kept that start off for a step's
  // longest time after each look, and the backlog waited for the next look, minutes on.
  const looks =
    received.notBefore !== undefined && received.notBefore > now && !(await deps.paces.givenBack(webhook.id, received.notBefore, now));
  // A step begun before this has surely ended by now (see `releaseStepEndsBy`).
  const endedBy = releaseLookAt(now, deps.config.deliveryTimeoutMs, RECHECK_MARGIN_MS);
  const stepAt = looks ? endedBy : now;
  // The chain is alive (see reviveLostChain); a newer chain took over if this is refused,
  // or a copy of this message (SQS delivers at least once) is stepping: two copies at once
  // POSTed the same page twice, over the endpoint's pace, and each went on as a chain.
  const follows = received.after === undefined ? undefined : { after: received.after, endedBy };
  if (!(await deps.webhooks.markReleaseStep(webhook.tenantId, webhook.id, received.token, stepAt, follows))) return 'stale';
  // Every next step this one sends follows it.
  const message: ReleaseMessage = { ...received, after: stepAt };
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
    const page = await deps.held.page(webhook.id, RELEASE_PAGE, now);
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
    const actual = await deps.held.count(webhook.id);
    fresh = await dropLostHeld(deps, fresh, actual, now);
    if (actual > 0) {
      await deps.queue.send([{ ...message, emptySince: undefined }], 1);
      return 'released';
    }
  }
  // Nothing is held: the gap markers last, after every held delivery they follow.
  const lost = lostHeldCount(fresh);
  const owed = await deps.gaps.owed(webhook.id, now);
  if (owed.length > 0 || lost) {
    // Each marker is sent before its count is cleared, with ids derived from the count:
    // a step that fails or dies in between leaves the count, and runs again (SQS
    // delivers the step again) to send the same marker, a duplicate its subscriber can
    // tell by its webhook-id, never none.
    await deps.queue.send([...owed, ...(lost ? [lost] : [])].map((count) => gapMarkerDelivery(webhook, count)));
    if (lost) await deps.webhooks.heldLostSent(webhook.tenantId, webhook.id, lost.dropped);
    const cleared = await Promise.all(owed.map((count) => deps.gaps.markerSent(webhook.id, count)));
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
    await deps.paces.reserve(webhook.id, posts * paceInterval(endpointRateOf(deps, webhook)), now);
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
      const removed = (await Promise.all(items.map((held) => deps.held.remove(webhookId, held.sk)))).filter(Boolean).length;
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
    // The endpoint asked to wait (`attempt` left it alone for that long): an attempt of
    // each delivery sent, but no failure and none of its budget spent for each that has
    // free waits left (FREE_WAITS). They stay held as their next attempts, and the chain
    // steps on once the wait is over. A POST may also carry deliveries whose free waits
    // are spent (held deliveries answered "wait" apart, then merged): the answer is a
    // failure of those alone, below, as it would have been sent to each alone; charged to
    // all, it spent the budget of the others for an answer that asked them to wait.
    const waiting = asked === undefined ? [] : items.filter((held) => waitsFree(held.message));
    if (waiting.length > 0) {
      const webhookId = webhook.id;
      // Each noted with the delivery it was in, so that it goes again as that one (`packHeld`).
      const waitedIn = delivery.deliveryId;
      await Promise.all(waiting.map((held) => deps.held.holdAgain(webhookId, held.sk, { ...afterFreeWait(held.message), waitedIn })));
    }
    if (asked !== undefined && waiting.length === items.length) {
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
    const refused = items.filter((held) => !waiting.includes(held));
    await spendHeldAttempt(deps, failed, refused, result, now);
    const wait = retryDelaySeconds({ scheduleSeconds: deps.config.retryScheduleSeconds, jitter: 0 }, 1, failureOf(result), now) ?? 5;
    stopStep(step, { kind: 'failed', webhook: failed, delaySeconds: Math.min(900, Math.max(1, wait)) });
    return false;
  }
  return true;
}

/**
 * The shortest retention period a deployment can have (`retentionDays` is at least 1): no
 * held item expires sooner after it was held, whatever the period was when it was held.
 */
const SHORTEST_RETENTION_MS = 86_400_000;

/**
 * A held count that found nothing held for HELD_COUNT_SETTLE_MS has drifted: it is set
 * to what is held, so deliveries stop being held behind nothing. What it counted beyond
 * that went without a release: DynamoDB's TTL deletes held items past the retention
 * period (of a webhook disabled or quarantined for longer) before a release reads them
 * (`dropExpiredHeld` counts those it finds). So they are counted as dropped for
 * `retention`, and noted on the webhook in the reset's own write (one caller counts
 * them), for a `sluice.gap` marker like other retention drops.
 *
 * Unless the webhook began to hold less than the shortest retention period ago
 * (`heldSince`): then nothing it holds can have expired, and the count is above what is
 * held because a delivery function died between a hold's count and its write (SQS held
 * it again, counted twice) or between a release's removal and the count's decrement.
 * Nothing was lost: the count is set right and counted apart (`HeldCountsCorrected`), with
 * no marker to tell a subscriber of a loss that never was, nor a drop to page on-call.
 * Without `heldSince` (holding since before it was kept, or its note failed) such a count
 * is told as a retention drop: a marker that overstates, rather than a loss told to no
 * one. Answers the webhook as it is now.
 */
async function dropLostHeld(deps: DeliveryDeps, webhook: Webhook, actual: number, now: number): Promise<Webhook> {
  const lost = webhook.heldCount - actual;
  const young = heldCountDrifted(webhook.heldSince, now);
  if ((await deps.webhooks.resetHeld(webhook.tenantId, webhook.id, webhook.heldCount, actual, now, !young)) && lost > 0) {
    const ids = { tenantId: webhook.tenantId, webhookId: webhook.id };
    if (young) {
      deps.metrics.count('HeldCountsCorrected', lost);
      deps.logger.info('Held count above what is held, set right: a delivery function died between two writes of a hold or a release', {
        ...context(ids),
        counted: webhook.heldCount,
        held: actual,
      });
    } else {
      countHeldGone(deps, ids, webhook.heldCount, actual);
    }
  }
  return (await deps.webhooks.get(webhook.tenantId, webhook.id)) ?? webhook;
}

/**
 * Whether a webhook's held count above what is held is a delivery function that died
 * between two writes (no loss), judged by when the webhook began to hold (`heldSince`):
 * less than a day ago, and no held item expires that soon. Without it, or held longer,
 * the count is of held deliveries that TTL removed (see `dropLostHeld`).
 */
export function heldCountDrifted(heldSince: number | undefined, now: number): boolean {
  return heldSince !== undefined && now - heldSince < SHORTEST_RETENTION_MS;
}

/**
 * Counts the held deliveries a webhook's count shows (`counted`) and its storage lacks
 * (`held` are there) as dropped for `retention`: deliveries, not events, as what each
 * held went with it (one event or more).
 */
export function countHeldGone(
  deps: Pick<DeliveryDeps, 'metrics' | 'logger'>,
  ids: { tenantId: string; webhookId: string },
  counted: number,
  held: number,
): void {
  deps.metrics.count('EventsDropped', counted - held, { reason: 'retention' });
  deps.logger.warn('Held deliveries gone without a release (past the retention period); counted as dropped', {
    ...context(ids),
    counted,
    held,
  });
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
      await deps.held.holdAgain(webhook.id, held.sk, next);
      continue;
    }
    // Queued for its next attempt, or dead-lettered, before it leaves the held store: a
    // step that fails or dies between the two runs again and finds it still held, and
    // queues it again (a duplicate, never none) or finds its dead letter (keyed by the
    // delivery) written.
    if (wait !== undefined) await later(deps, next, wait);
    else await deps.deadLetters.add(held.message, describe(result), now);
    // Counted by the step whose removal applied (a step that ran twice removes nothing).
    if (!(await deps.held.remove(webhook.id, held.sk))) continue;
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

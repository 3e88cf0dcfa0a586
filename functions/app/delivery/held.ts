/**
 * Deliveries held in DynamoDB while their endpoint cannot take them (quarantined,
 * disabled, paused, or behind a slow backlog), up to the held cap; past it, and when a
 * drop switch or the retention period discards them, their events are counted for the
 * `sluice.gap` marker each resource gets.
 */
import type { HeldDelivery } from '../../adapters/held-deliveries.ts';
import { eventCount, gapCounts, partsByResource } from '../../core/deliveries.ts';
import type { DeliveryMessage, Webhook } from '../../core/model.ts';
import { LogTally } from '../../core/telemetry.ts';
import { releaseIfNoChain } from './chains.ts';
import { context, type DeliveryDeps, type DeliveryOutcome, deletedSince, dropForDeleted } from './deps.ts';

/**
 * How often a container logs that a webhook's deliveries go past its held cap: often
 * enough that the window of an `events-rejected-or-dropped` alarm holds a line naming
 * the webhook (its metric cannot), seldom enough that a flood past the cap is not a
 * flood of logs.
 */
export const OVERFLOW_LOG_INTERVAL_MS = 60_000;

/** When this container last logged each webhook's overflow. */
const overflowLog = new LogTally(OVERFLOW_LOG_INTERVAL_MS);

/**
 * Counts one resource's events for gap markers instead of delivering them, each under
 * `reason`; a gap marker among them under its own reason, for the events it stands for.
 * Once per delivery, however often SQS hands it back (see `GapCounts.countOnce`). Answers
 * how many of its events (not markers, counted when they were dropped) this call counted,
 * for the metrics: none when an earlier receive of the delivery counted them.
 */
export async function countForGaps(
  deps: DeliveryDeps,
  webhookId: string,
  message: Pick<DeliveryMessage, 'deliveryId' | 'events'>,
  reason: Parameters<typeof gapCounts>[1],
  now: number,
): Promise<number> {
  const resource = message.events[0]?.resource ?? '';
  let events = 0;
  for (const count of gapCounts(message.events, reason)) {
    const counted = await deps.gaps.countOnce(message.deliveryId, webhookId, resource, count.dropped, now, count.reason);
    // The events are all in the count of `reason` (with any marker of that reason).
    if (counted && count.reason === reason) events = eventCount(message.events);
  }
  return events;
}

/**
 * Holds a delivery in DynamoDB within the cap; past it, its events are counted for
 * a gap marker. A delivery with several resources' events is held as one part per
 * resource, since release goes per resource in seq order. `underSwitch`: held by a
 * pause, whose lift releases it.
 */
export async function hold(deps: DeliveryDeps, webhook: Webhook, message: DeliveryMessage, underSwitch = false): Promise<DeliveryOutcome> {
  const parts = partsByResource(message);
  const now = deps.now();
  const counted = parts.length > 1 ? await countHeld(deps, webhook, parts.length, now) : undefined;
  if (counted) {
    // One count for all the parts; a part that was already held (SQS delivers at
    // least once) gives its place back, so the count always matches the held items.
    const keys = await Promise.all(parts.map((part) => deps.held.holdAt(part, now)));
    const fresh = parts.flatMap((part, i) => (keys[i] === undefined ? [] : [{ part, sk: keys[i] }]));
    if (await removedForDeleted(deps, webhook, fresh)) return 'dropped';
    const already = parts.length - fresh.length;
    if (already > 0) await deps.webhooks.adjustHeld(webhook.tenantId, webhook.id, -already);
    if (fresh.length > 0) deps.metrics.count('DeliveriesHeld', fresh.length);
    // Held before too: see holdPart.
    if (!underSwitch) await releaseIfNoChain(deps, counted, message);
    return 'held';
  }
  // One part, or too near the cap for all of them: part by part.
  for (const part of parts) await holdPart(deps, webhook, part, underSwitch);
  return 'held';
}

/**
 * Counts `n` deliveries, held at `now`, into the webhook's held count within the cap
 * (`WebhookStore.countHeld`), answering the webhook as the count left it. A hold that
 * starts from nothing notes when holding began (`Webhook.heldSince`): none of what the
 * webhook then holds can expire before a retention period after it, so a release that
 * finds the count above what is held sooner knows DynamoDB's TTL did not remove the rest
 * (release.ts `dropLostHeld`). Noted before the count, when the webhook as read holds
 * nothing, so that a function that dies after the count (SQS hands the delivery back, and
 * it is counted twice) leaves the time noted; and after it, when the count started from
 * nothing all the same. A note that fails is logged, not thrown: a hold failed after its
 * count would be counted again when SQS hands it back, and without the note a count above
 * what is held is judged as before.
 */
async function countHeld(deps: DeliveryDeps, webhook: Webhook, n: number, now: number): Promise<Webhook | undefined> {
  if (webhook.heldCount <= 0 && webhook.heldSince === undefined) await noteHeldSince(deps, webhook, now, true);
  const counted = await deps.webhooks.countHeld(webhook.tenantId, webhook.id, n, deps.config.heldPerWebhook);
  if (counted === undefined || counted.heldCount !== n || counted.heldSince !== undefined) return counted;
  await noteHeldSince(deps, webhook, now, false);
  return counted;
}

async function noteHeldSince(deps: DeliveryDeps, webhook: Webhook, now: number, before: boolean): Promise<void> {
  try {
    await deps.webhooks.noteHeldSince(webhook.tenantId, webhook.id, now, { before });
  } catch (error) {
    deps.logger.warn('Could not note when a webhook began to hold deliveries', {
      ...context({ tenantId: webhook.tenantId, webhookId: webhook.id }),
      error: String(error),
    });
  }
}

async function holdPart(deps: DeliveryDeps, webhook: Webhook, message: DeliveryMessage, underSwitch: boolean): Promise<void> {
  const now = deps.now();
  // The count goes up first (the cap is checked there); a delivery that was already
  // held gives its place back, so the count always matches the held items.
  let counted = await countHeld(deps, webhook, 1, now);
  if (!counted && (await pruneExpiredHeld(deps, webhook, now))) {
    counted = await countHeld(deps, webhook, 1, now);
  }
  if (counted) {
    const sk = await deps.held.holdAt(message, now);
    if (sk !== undefined && (await removedForDeleted(deps, webhook, [{ part: message, sk }]))) return;
    if (sk !== undefined) deps.metrics.count('DeliveriesHeld');
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
 * Whether the webhook was deleted while deliveries to it were being held, after their
 * count on its item and before their store (`fresh`: the parts this hold stored, with
 * their keys). The deletion removed what was held when it looked, which left these out:
 * no release would ever read them, and their events, counted nowhere, would go with
 * their TTL. Removed now, each counted as a deleted webhook's delivery is; a part the
 * deletion did find is gone already (`remove` answers false), counted by the deletion.
 * One consistent read for each hold that stored something, a path of endpoints that
 * cannot take their deliveries.
 */
async function removedForDeleted(
  deps: DeliveryDeps,
  webhook: Webhook,
  fresh: readonly { readonly part: DeliveryMessage; readonly sk: string }[],
): Promise<boolean> {
  if (fresh.length === 0 || !(await deletedSince(deps, webhook))) return false;
  for (const { part, sk } of fresh) {
    if (await deps.held.remove(webhook.id, sk)) dropForDeleted(deps, part);
  }
  return true;
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
  if (!(await deps.sendBudgets.takeOnce(`prune:${webhook.id}`, HELD_PRUNE_INTERVAL_MS, now))) return false;
  const startedAt = deps.now();
  const young = () => deps.now() - startedAt < deps.config.deliveryTimeoutMs / 2;
  const expired = await deps.held.expired(webhook.id, now, young);
  return (await dropExpiredHeld(deps, webhook, expired, now, young)) > 0;
}

/**
 * Held deliveries that outlived the retention period: not delivered. Removed from
 * the held count, counted, and each resource's share stands in a `sluice.gap`
 * marker (reason `retention`), sent at the end of the release. Answers how many it removed.
 */
export async function dropExpiredHeld(
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
    if (!(await deps.held.remove(webhook.id, held.sk))) continue;
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

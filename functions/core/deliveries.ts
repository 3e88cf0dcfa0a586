/**
 * Fan-out and batching (SPEC §2 Fan-out, §3 Deliveries): which webhooks get an
 * event, and how a turn's events become deliveries of at most 100 events and
 * 256 KiB each, per webhook, in seq order.
 */

import { FREE_WAITS } from './backoff.ts';
import { derivedId, newId } from './ids.ts';
import { type DeliveredEvent, type DeliveryMessage, type GapMarker, SLUICE_VERSION, type Subscriber, type Webhook } from './model.ts';
import { anyTypeMatches } from './patterns.ts';
import { deliveryHeaders, type SignedHeaders } from './signing.ts';

export const MAX_EVENTS_PER_DELIVERY = 100;
export const MAX_DELIVERY_BYTES = 256 * 1024;

/** The resources an event is about: its own and each parent, once each. */
export function subscribedResources(event: Pick<DeliveredEvent, 'resource' | 'parents'>): string[] {
  return [...new Set([event.resource, ...event.parents])];
}

/**
 * Whether a webhook should receive an event: whatever its status, since a disabled
 * webhook's deliveries are held (up to the cap) until it is enabled again, not lost.
 */
export function webhookWants(webhook: Pick<Subscriber, 'types'>, event: Pick<DeliveredEvent, 'type'>): boolean {
  return anyTypeMatches(webhook.types, event.type);
}

export interface PlannedDelivery {
  readonly webhook: Subscriber;
  readonly events: readonly DeliveredEvent[];
}

/** The body a subscriber receives. */
export function deliveryBody(webhookId: string, events: readonly unknown[]): string {
  return JSON.stringify({ webhook: webhookId, events });
}

const ENVELOPE_BYTES = Buffer.byteLength(deliveryBody('wh_0000000000000000000', []));

/**
 * Groups events into deliveries. `webhooksOn(resource)` lists the webhooks
 * subscribed to one resource. Each webhook receives an event once, even when it is
 * subscribed to several of the event's resources.
 */
export function planDeliveries(
  events: readonly DeliveredEvent[],
  webhooksOn: (resource: string) => readonly Subscriber[],
): PlannedDelivery[] {
  const perWebhook = new Map<string, { webhook: Subscriber; events: DeliveredEvent[] }>();
  for (const event of events) {
    const seen = new Set<string>();
    for (const resource of subscribedResources(event)) {
      for (const webhook of webhooksOn(resource)) {
        if (seen.has(webhook.id) || !webhookWants(webhook, event)) continue;
        seen.add(webhook.id);
        const entry = perWebhook.get(webhook.id) ?? { webhook, events: [] };
        entry.events.push(event);
        perWebhook.set(webhook.id, entry);
      }
    }
  }
  return [...perWebhook.values()].flatMap(({ webhook, events: list }) => chunkEvents(list).map((chunk) => ({ webhook, events: chunk })));
}

/** Splits a webhook's events, in order, into deliveries of at most 100 events and 256 KiB. */
export function chunkEvents<E>(events: readonly E[]): E[][] {
  return chunkByBytes(events, {
    maxBytes: MAX_DELIVERY_BYTES,
    maxEvents: MAX_EVENTS_PER_DELIVERY,
    baseBytes: ENVELOPE_BYTES,
    // The comma between two events in the delivery's list.
    perEventBytes: 1,
  });
}

/**
 * Cuts events, in order, into runs of at most `maxEvents` whose JSON (each event's, plus
 * `perEventBytes`, plus `baseBytes` once a run) is at most `maxBytes`; an event larger
 * alone is a run of its own.
 */
export function chunkByBytes<E>(
  events: readonly E[],
  limits: { readonly maxBytes: number; readonly maxEvents?: number; readonly baseBytes?: number; readonly perEventBytes?: number },
): E[][] {
  const { maxBytes, maxEvents = Number.POSITIVE_INFINITY, baseBytes = 0, perEventBytes = 0 } = limits;
  const chunks: E[][] = [];
  let chunk: E[] = [];
  let bytes = baseBytes;
  for (const event of events) {
    const size = Buffer.byteLength(JSON.stringify(event)) + perEventBytes;
    if (chunk.length > 0 && (chunk.length >= maxEvents || bytes + size > maxBytes)) {
      chunks.push(chunk);
      chunk = [];
      bytes = baseBytes;
    }
    chunk.push(event);
    bytes += size;
  }
  if (chunk.length > 0) chunks.push(chunk);
  return chunks;
}

/**
 * A delivery id derived from its webhook and every one of its events, in order: the
 * same when the same events are published again (a crashed holder's chunk), so the
 * subscriber sees one `msg_` id, and different for any other events. (The first and
 * last alone do not tell apart merges of several objects' turns: A, B, C and, after
 * A's and C's commits failed, A, D, C.)
 */
export function deliveryId(webhookId: string, events: readonly { id: string }[]): string {
  return derivedId('msg', webhookId, ...events.map((event) => event.id));
}

/**
 * Merges first attempts for the same webhook into as few deliveries as the limits
 * allow, keeping each message's events in order. A message with no other for its
 * webhook is left as it is (and keeps its id); merged ones get ids of their events.
 */
export function mergeDeliveries(messages: readonly DeliveryMessage[]): DeliveryMessage[] {
  const byWebhook = new Map<string, DeliveryMessage[]>();
  for (const message of messages) {
    const key = `${message.tenantId}|${message.webhookId}`;
    const group = byWebhook.get(key) ?? [];
    group.push(message);
    byWebhook.set(key, group);
  }
  return [...byWebhook.values()].flatMap((group) => {
    const [first] = group;
    if (group.length === 1 || !first) return group;
    return chunkEvents(group.flatMap((m) => m.events)).map((events) => ({
      deliveryId: deliveryId(first.webhookId, events),
      tenantId: first.tenantId,
      webhookId: first.webhookId,
      events,
      attempt: 1,
    }));
  });
}

/**
 * A delivery's events by resource, each part a delivery of its own (the whole
 * message when it names one resource). Held deliveries are released per resource
 * in seq order, and overflow is counted per resource, so both work on parts.
 */
export function partsByResource(message: DeliveryMessage): DeliveryMessage[] {
  const byResource = new Map<string, Array<DeliveredEvent | GapMarker>>();
  for (const event of message.events) {
    const part = byResource.get(event.resource) ?? [];
    part.push(event);
    byResource.set(event.resource, part);
  }
  if (byResource.size <= 1) return [message];
  return [...byResource.values()].map((events) => ({ ...message, deliveryId: deliveryId(message.webhookId, events), events }));
}

/**
 * What a delivery's events stand for when they are counted for gap markers instead of
 * delivered (a drop switch, the held cap): each event one, under `reason`; a gap
 * marker the events it already stands for, under its own reason, so that a marker
 * discarded in its turn is not shrunk to one event in the marker that replaces it.
 */
export function gapCounts(
  events: readonly (DeliveredEvent | GapMarker)[],
  reason: GapMarker['data']['reason'],
): Array<{ readonly reason: GapMarker['data']['reason']; readonly dropped: number }> {
  const counts = new Map<GapMarker['data']['reason'], number>();
  for (const event of events) {
    const [as, n] = isGapMarker(event) ? [event.data.reason, event.data.dropped] : [reason, 1];
    counts.set(as, (counts.get(as) ?? 0) + n);
  }
  return [...counts].map(([as, dropped]) => ({ reason: as, dropped }));
}

/** How many of a delivery's events are events, not gap markers (which stand for events already counted). */
export function eventCount(events: readonly (DeliveredEvent | GapMarker)[]): number {
  return events.filter((event) => !isGapMarker(event)).length;
}

/** A `sluice.gap` marker: sluice's own (the type is reserved), and it carries no seq. */
function isGapMarker(event: DeliveredEvent | GapMarker): event is GapMarker {
  return event.type === 'sluice.gap' && !('seq' in event);
}

/**
 * The attempts a delivery has spent of its retry budget: all it made but those the
 * endpoint answered with a free wait (FREE_WAITS, core/backoff.ts).
 */
export function attemptsSpent(message: Pick<DeliveryMessage, 'attempt' | 'waited'>): number {
  return message.attempt - (message.waited ?? 0);
}

/** Whether an answer that asks this delivery to wait may still be a free one. */
export function waitsFree(message: Pick<DeliveryMessage, 'waited'>): boolean {
  return (message.waited ?? 0) < FREE_WAITS;
}

/** A delivery as its next attempt after an answer that asked it to wait, freely. */
export function afterFreeWait<M extends DeliveryMessage>(message: M): M {
  return { ...message, attempt: message.attempt + 1, waited: (message.waited ?? 0) + 1 };
}

/**
 * What a held delivery's attempts so far were: none (`first`, or `replay` for a replay's,
 * whose events were logged at their first delivery), only answers that asked to wait
 * (`waited`: no failure, so nothing about its body was refused), or a failure. A dead
 * letter sent again failed a whole schedule before: it goes alone, as the delivery it was
 * (its `msg_` id, by which a subscriber that did take it can tell).
 */
function heldKind(message: DeliveryMessage): 'first' | 'replay' | 'waited' | 'failed' {
  if (message.replayedAt !== undefined) return 'failed';
  if (message.attempt === 1) return message.replay ? 'replay' : 'first';
  return attemptsSpent(message) === 1 ? 'waited' : 'failed';
}

/**
 * Groups held deliveries, in release order, into as few deliveries as the limits
 * allow: consecutive first attempts (never sent to the subscriber) share one, a replay's
 * apart from others (so that only these are logged), and so do
 * consecutive deliveries whose every attempt was answered "wait" in the same delivery
 * (`waitedIn`: a merged release the endpoint asked to wait for goes again as one POST, not
 * one per delivery, and as that delivery, not merged with another asked to wait in the
 * same step, which its removed neighbours left next to it), while a
 * delivery that failed an attempt (or a dead letter sent again) goes alone, under its own id. Release order is by
 * resource, then seq, so each resource's events stay in order within a group.
 */
export function packHeld(messages: readonly DeliveryMessage[]): DeliveryMessage[][] {
  const groups: DeliveryMessage[][] = [];
  let group: DeliveryMessage[] = [];
  let events = 0;
  let bytes = ENVELOPE_BYTES;
  for (const message of messages) {
    const size = message.events.reduce((sum, e) => sum + Buffer.byteLength(JSON.stringify(e)) + 1, 0);
    const fits = events + message.events.length <= MAX_EVENTS_PER_DELIVERY && bytes + size <= MAX_DELIVERY_BYTES;
    const kind = heldKind(message);
    const mergeable = kind !== 'failed' && group.every((m) => heldKind(m) === kind && m.waitedIn === message.waitedIn);
    if (group.length > 0 && !(fits && mergeable)) {
      groups.push(group);
      group = [];
      events = 0;
      bytes = ENVELOPE_BYTES;
    }
    group.push(message);
    events += message.events.length;
    bytes += size;
  }
  if (group.length > 0) groups.push(group);
  return groups;
}

/**
 * A release step's groups (from `packHeld`, in release order) as at most `lanes` lanes,
 * each sent one POST after another while the lanes go at once. Groups that share a
 * resource (`resourceOf` each held item) are in one lane, in release order, so each
 * resource's events still come in order; a lane stops at the first group it does not
 * send, and the rest stay held for the next step, which reads them first. A lane takes
 * the next set of linked groups when it has the fewest groups so far. Sent one after
 * another, a backlog of many resources went no faster than one POST at a time: up to 100
 * events per answer time, where the endpoint's pace lets MAX_IN_FLIGHT_PER_ENDPOINT
 * POSTs be under way.
 */
export function releaseLanes<T>(groups: readonly (readonly T[])[], resourceOf: (item: T) => string, lanes: number): T[][][] {
  // Linked groups (a resource in both) by union-find over their indexes.
  const parent = groups.map((_, i) => i);
  const root = (i: number): number => {
    let at = i;
    while (parent[at] !== at) at = parent[at] ?? at;
    return at;
  };
  const firstWith = new Map<string, number>();
  groups.forEach((group, i) => {
    for (const item of group) {
      const resource = resourceOf(item);
      const seen = firstWith.get(resource);
      if (seen === undefined) firstWith.set(resource, i);
      else parent[root(i)] = root(seen);
    }
  });
  const linked = new Map<number, T[][]>();
  groups.forEach((group, i) => {
    const key = root(i);
    const set = linked.get(key) ?? [];
    set.push([...group]);
    linked.set(key, set);
  });
  const out: T[][][] = Array.from({ length: Math.max(1, Math.min(lanes, linked.size)) }, () => []);
  for (const set of linked.values()) {
    const lane = out.reduce((least, candidate) => (candidate.length < least.length ? candidate : least));
    lane.push(...set);
  }
  return out.filter((lane) => lane.length > 0);
}

/**
 * One delivery of a group from `packHeld`: the message itself when it is alone. A group
 * of first attempts is a first attempt (logged with its events, for replay), and one of a
 * replay's first attempts a replay's (not logged again); a group that was answered "wait"
 * is its deliveries' next attempt (their events were logged at their first), with the id
 * of its events, which the same group had when it was answered.
 *
 * Each event goes once: two held deliveries may carry the same events (a distributor that
 * died between publishing its object's last events and its commit, whose next holder
 * published them again with the events that came meanwhile, under another id), and
 * merged as they are they would be one POST of seqs 1, 2, 3, 1, 2.
 */
export function releaseDelivery(group: readonly DeliveryMessage[]): DeliveryMessage {
  const [first] = group;
  if (!first) throw new Error('an empty group of held deliveries');
  if (group.length === 1) return first;
  const seen = new Set<string>();
  const events = group.flatMap((m) => m.events).filter((event) => !seen.has(event.id) && seen.add(event.id));
  const merged = { deliveryId: deliveryId(first.webhookId, events), tenantId: first.tenantId, webhookId: first.webhookId, events };
  const kind = heldKind(first);
  if (kind === 'first') return { ...merged, attempt: 1 };
  if (kind === 'replay') return { ...merged, attempt: 1, replay: true };
  const attempt = Math.max(...group.map((m) => m.attempt));
  return { ...merged, attempt, waited: attempt - 1 };
}

/**
 * Events counted for a webhook instead of delivered or held (past the held cap, by a
 * drop switch, or past the retention period), per reason and resource: they are owed
 * one `sluice.gap` marker, for those a sent marker does not stand for yet.
 */
export interface OverflowCount {
  /** The count's key among the webhook's counts (its reason and resource). */
  readonly key: string;
  readonly reason: GapMarker['data']['reason'];
  readonly resource: string;
  /** Events counted since the count began. */
  readonly dropped: number;
  /** How many of them markers already sent stand for. */
  readonly sent: number;
  /** When the count began (epoch ms): a count begun again after it was cleared owes markers of other ids. */
  readonly since: number;
  /** When the last of its events was counted (epoch ms). */
  readonly lastAt: number;
}

/**
 * The held deliveries a webhook's held count found gone without a release (see
 * `Webhook.heldLost`), as a count that owes a `retention` marker for those no sent
 * marker stands for yet. Which of the webhook's resources they were on went with them:
 * the marker names the webhook's own, and counts deliveries (each had one event or more).
 */
export function lostHeldCount(webhook: Pick<Webhook, 'resource' | 'heldLost'>): OverflowCount | undefined {
  const lost = webhook.heldLost;
  if (!lost || lost.count <= lost.sent) return undefined;
  return {
    key: 'held_lost',
    reason: 'retention',
    resource: webhook.resource,
    dropped: lost.count,
    sent: lost.sent,
    since: 0,
    lastAt: lost.at,
  };
}

/**
 * The delivery of the `sluice.gap` marker a count owes, for the events no sent marker
 * stands for. Its ids are derived from the count as read, so a marker sent again (a
 * step that failed or died after the send runs again) is the same delivery, with the
 * same `webhook-id`, which a subscriber can tell as a duplicate.
 */
export function gapMarkerDelivery(webhook: Pick<Webhook, 'id' | 'tenantId'>, count: OverflowCount): DeliveryMessage<GapMarker> {
  const parts = [webhook.id, count.key, count.since, count.sent, count.dropped];
  return {
    deliveryId: derivedId('msg', ...parts),
    tenantId: webhook.tenantId,
    webhookId: webhook.id,
    events: [
      {
        id: derivedId('evt', ...parts),
        resource: count.resource,
        type: 'sluice.gap',
        data: { dropped: count.dropped - count.sent, reason: count.reason },
        created_at: new Date(count.lastAt).toISOString(),
      },
    ],
    attempt: 1,
  };
}

/**
 * A `webhook.ping` ready to POST to a webhook's URL: its body, and its headers signed with
 * `secrets` under a new `msg_` id, as a delivery's are (a URL's verification, the canary's
 * check of its own receiver).
 */
export function signedPing(
  webhookId: string,
  resource: string,
  secrets: readonly string[],
  now: number,
): { body: string; headers: SignedHeaders } {
  const body = deliveryBody(webhookId, [pingEvent(newId('evt', now), resource, now)]);
  return { body, headers: deliveryHeaders(secrets, newId('msg', now), Math.floor(now / 1000), body, SLUICE_VERSION) };
}

/** The signed `webhook.ping` sent to verify a URL (data {}) or to probe a quarantined endpoint (data {probe: true}). */
export function pingEvent(id: string, resource: string, now: number, data: Record<string, unknown> = {}): DeliveredEvent {
  return { id, seq: 0, resource, parents: [], type: 'webhook.ping', data, created_at: new Date(now).toISOString() };
}

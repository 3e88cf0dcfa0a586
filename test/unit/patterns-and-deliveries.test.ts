import { describe, expect, it } from 'vitest';
import { DeliveryOutbox } from '../../functions/app/delivery-outbox.ts';
import {
  deliveryId,
  eventCount,
  gapCounts,
  gapMarkerDelivery,
  lostHeldCount,
  MAX_DELIVERY_BYTES,
  mergeDeliveries,
  packHeld,
  partsByResource,
  planDeliveries,
  releaseDelivery,
  releaseLanes,
  subscribedResources,
} from '../../functions/core/deliveries.ts';
import type { DeliveredEvent, DeliveryMessage, Webhook } from '../../functions/core/model.ts';
import { typeMatches } from '../../functions/core/patterns.ts';
import { webhookFixture } from '../support/fixtures.ts';

const webhook = (id: string, resource: string, types: string[] = ['*'], status: Webhook['status'] = 'active'): Webhook =>
  webhookFixture({ id, tenantId: 'ten_a', resource, types, status });

const event = (seq: number, resource = 'story:1', parents: string[] = [], type = 'story.changed', data: unknown = {}): DeliveredEvent => ({
  id: `evt_${seq}`,
  seq,
  resource,
  parents,
  type,
  data,
  created_at: '2026-11-22T10:00:00.000Z',
});

describe('type patterns', () => {
  it.each([
    ['task.changed', 'task.changed', true],
    ['task.changed', 'task.created', false],
    ['task.*', 'task.changed', true],
    ['task.*', 'task.comment.added', true],
    ['task.*', 'task', false],
    ['task.*', 'taskforce.changed', false],
    ['*', 'anything.at_all', true],
  ])('%s vs %s → %s', (pattern, type, expected) => {
    expect(typeMatches(pattern, type)).toBe(expected);
  });
});

describe('fan-out', () => {
  it('names the resource and each parent once', () => {
    expect(subscribedResources({ resource: 'story:1', parents: ['task:2', 'project:3', 'task:2'] })).toEqual([
      'story:1',
      'task:2',
      'project:3',
    ]);
  });

  it('sends an event to webhooks on the resource and on every parent, filtered by type; a disabled one too (it holds them)', () => {
    const hooks: Record<string, Webhook[]> = {
      'story:1': [webhook('wh_story', 'story:1')],
      'task:2': [webhook('wh_task', 'task:2', ['story.*']), webhook('wh_off', 'task:2', ['*'], 'disabled')],
      'project:3': [webhook('wh_project', 'project:3', ['task.*'])],
    };
    const planned = planDeliveries([event(1, 'story:1', ['task:2', 'project:3'])], (r) => hooks[r] ?? []);
    expect(planned.map((d) => d.webhook.id).sort()).toEqual(['wh_off', 'wh_story', 'wh_task']);
  });

  it('delivers an event once to a webhook subscribed through two of its resources', () => {
    const shared = webhook('wh_shared', 'task:2');
    const planned = planDeliveries([event(1, 'task:2', ['task:2'])], () => [shared]);
    expect(planned).toHaveLength(1);
    expect(planned[0]?.events).toHaveLength(1);
  });

  it('splits deliveries at 100 events, keeping seq order', () => {
    const events = Array.from({ length: 250 }, (_, i) => event(i + 1));
    const planned = planDeliveries(events, () => [webhook('wh_a', 'story:1')]);
    expect(planned.map((d) => d.events.length)).toEqual([100, 100, 50]);
    expect(planned.flatMap((d) => d.events.map((e) => e.seq))).toEqual(events.map((e) => e.seq));
  });

  it('splits deliveries so no body passes 256 KiB', () => {
    const big = 'x'.repeat(60 * 1024);
    const events = Array.from({ length: 10 }, (_, i) => event(i + 1, 'story:1', [], 'story.changed', { big }));
    const planned = planDeliveries(events, () => [webhook('wh_a', 'story:1')]);
    expect(planned.length).toBeGreaterThan(2);
    for (const d of planned) {
      expect(Buffer.byteLength(JSON.stringify({ webhook: 'wh_a', events: d.events }))).toBeLessThanOrEqual(MAX_DELIVERY_BYTES);
    }
  });
});

/** An event with an id of its own (merges tell events apart by id). */
const ev = (id: string, resource: string, seq: number): DeliveredEvent => ({ ...event(seq, resource), id });

describe('merged deliveries', () => {
  const message = (webhookId: string, resource: string, seqs: number[]): DeliveryMessage<DeliveredEvent> => {
    const events = seqs.map((seq) => ev(`${resource}#${seq}`, resource, seq));
    return { deliveryId: deliveryId(webhookId, events), tenantId: 'ten_a', webhookId, events, attempt: 1 };
  };

  it("merges first attempts per webhook, keeping each object's events in order, and leaves a lone one as it was", () => {
    const lone = message('wh_b', 'x:1', [1]);
    const merged = mergeDeliveries([message('wh_a', 'o:1', [1, 2]), lone, message('wh_a', 'o:2', [7])]);
    expect(merged).toHaveLength(2);
    expect(merged).toContainEqual(lone);
    const a = merged.find((m) => m.webhookId === 'wh_a');
    expect(a?.events.map((e) => e.id)).toEqual(['o:1#1', 'o:1#2', 'o:2#7']);
    expect(a?.deliveryId).toBe(deliveryId('wh_a', a?.events ?? []));
  });

  it('gives merges of different events different ids, even with the same first and last events and count', () => {
    // Turns A, B, C merged; A's and C's published again beside a new turn D's (their commits failed).
    const [first] = mergeDeliveries([message('wh_a', 'a', [1]), message('wh_a', 'b', [1]), message('wh_a', 'c', [1])]);
    const [second] = mergeDeliveries([message('wh_a', 'a', [1]), message('wh_a', 'd', [1]), message('wh_a', 'c', [1])]);
    expect(second?.deliveryId).not.toBe(first?.deliveryId);
    // The same events give the same id (a republished merge, a release answered "wait").
    const [again] = mergeDeliveries([message('wh_a', 'a', [1]), message('wh_a', 'b', [1]), message('wh_a', 'c', [1])]);
    expect(again?.deliveryId).toBe(first?.deliveryId);
  });

  it("sends a chunk published again, alone, under another webhook-id than the merge it first went out in (README: drop duplicates by the events' id)", () => {
    const [merged] = mergeDeliveries([message('wh_a', 'a', [1, 2]), message('wh_a', 'b', [1])]);
    // a's turn died before its commit; the next holder publishes its chunk again, with no other turn beside it.
    const [alone] = mergeDeliveries([message('wh_a', 'a', [1, 2])]);
    expect(alone?.events.map((e) => e.id)).toEqual(['a#1', 'a#2']);
    expect(merged?.events.map((e) => e.id).slice(0, 2)).toEqual(['a#1', 'a#2']);
    expect(alone?.deliveryId).not.toBe(merged?.deliveryId);
  });

  it('splits a merge past 100 events into deliveries within the limits', () => {
    const merged = mergeDeliveries([
      message(
        'wh_a',
        'o:1',
        Array.from({ length: 80 }, (_, i) => i + 1),
      ),
      message(
        'wh_a',
        'o:2',
        Array.from({ length: 80 }, (_, i) => i + 1),
      ),
    ]);
    expect(merged.map((m) => m.events.length)).toEqual([100, 60]);
    expect(new Set(merged.map((m) => m.deliveryId)).size).toBe(2);
  });

  it('parts a delivery by resource, each part in seq order with an id of its own', () => {
    const [one] = mergeDeliveries([message('wh_a', 'o:1', [3, 4]), message('wh_a', 'o:2', [1])]);
    const parts = partsByResource(one as DeliveryMessage);
    expect(parts.map((p) => p.events.map((e) => e.id))).toEqual([['o:1#3', 'o:1#4'], ['o:2#1']]);
    expect(parts[0]?.deliveryId).not.toBe(parts[1]?.deliveryId);
    const single = message('wh_a', 'o:9', [1, 2]);
    expect(partsByResource(single)).toEqual([single]);
  });

  it('releases held first attempts together within the limits, and an attempted delivery alone under its own id', () => {
    const held = [
      message('wh_a', 'o:1', [1, 2]),
      message('wh_a', 'o:1', [3]),
      message(
        'wh_a',
        'o:2',
        Array.from({ length: 97 }, (_, i) => i + 1),
      ),
      message('wh_a', 'o:3', [1]),
      { ...message('wh_a', 'o:4', [1]), attempt: 3 },
      message('wh_a', 'o:5', [1]),
    ];
    const groups = packHeld(held);
    // 2 + 1 + 97 = 100 events fill one delivery; the next would pass the limit.
    expect(groups.map((g) => g.length)).toEqual([3, 1, 1, 1]);
    const first = releaseDelivery(groups[0] as DeliveryMessage[]);
    expect(first.events.map((e) => e.id).slice(0, 4)).toEqual(['o:1#1', 'o:1#2', 'o:1#3', 'o:2#1']);
    expect(first).toMatchObject({ attempt: 1, webhookId: 'wh_a' });
    expect(first.deliveryId).toBe(deliveryId('wh_a', first.events));
    // Sent before: it keeps its id and attempt count, and nothing joins it.
    expect(releaseDelivery(groups[2] as DeliveryMessage[])).toBe(held[4]);
  });

  it('releases the same events held twice (under two delivery ids) once, in seq order', () => {
    const held = [message('wh_a', 'o:1', [1, 2, 3]), message('wh_a', 'o:1', [1, 2]), message('wh_a', 'o:1', [4])];
    const merged = releaseDelivery(packHeld(held)[0] as DeliveryMessage[]);
    expect(merged.events.map((e) => e.id)).toEqual(['o:1#1', 'o:1#2', 'o:1#3', 'o:1#4']);
    expect(merged.deliveryId).toBe(deliveryId('wh_a', merged.events));
  });

  it('releases held deliveries answered only "wait" together again, as their next attempt, apart from first attempts and failed ones', () => {
    const waited = (resource: string, attempt: number) => ({ ...message('wh_a', resource, [1]), attempt, waited: attempt - 1 });
    const held = [waited('o:1', 2), waited('o:2', 3), message('wh_a', 'o:3', [1]), { ...waited('o:4', 3), waited: 1 }, waited('o:5', 2)];
    const groups = packHeld(held);
    expect(groups.map((g) => g.length)).toEqual([2, 1, 1, 1]);
    const again = releaseDelivery(groups[0] as DeliveryMessage[]);
    expect(again).toMatchObject({ attempt: 3, waited: 2 });
    expect(again.deliveryId).toBe(deliveryId('wh_a', again.events));
    // A failed attempt: alone, under its own id.
    expect(releaseDelivery(groups[2] as DeliveryMessage[])).toBe(held[3]);
  });

  it('releases held deliveries answered "wait" in different deliveries apart, each group as the delivery it was', () => {
    const waited = (resource: string, waitedIn: string) => ({ ...message('wh_a', resource, [1]), attempt: 2, waited: 1, waitedIn });
    const held = [waited('o:1', 'msg_x'), waited('o:2', 'msg_x'), waited('o:3', 'msg_y'), waited('o:4', 'msg_y')];
    expect(packHeld(held).map((g) => g.map((m) => m.waitedIn))).toEqual([
      ['msg_x', 'msg_x'],
      ['msg_y', 'msg_y'],
    ]);
  });

  it("releases a replay's held deliveries together as a replay's, apart from first attempts, so that only those are logged", () => {
    const replayed = (resource: string) => ({ ...message('wh_a', resource, [1]), replay: true });
    const held = [replayed('o:1'), replayed('o:2'), message('wh_a', 'o:3', [1]), message('wh_a', 'o:4', [1]), replayed('o:5')];
    const groups = packHeld(held);
    expect(groups.map((g) => g.length)).toEqual([2, 2, 1]);
    expect(releaseDelivery(groups[0] as DeliveryMessage[])).toMatchObject({ attempt: 1, replay: true });
    expect(releaseDelivery(groups[1] as DeliveryMessage[]).replay).toBeUndefined();
  });

  it('releases a dead letter sent again alone, as the delivery it was (its own msg_ id)', () => {
    const letter = (resource: string) => ({ ...message('wh_a', resource, [1]), replay: true, replayedAt: 1 });
    const held = [letter('o:1'), letter('o:2'), message('wh_a', 'o:3', [1])];
    const groups = packHeld(held);
    expect(groups.map((g) => g.length)).toEqual([1, 1, 1]);
    expect(releaseDelivery(groups[0] as DeliveryMessage[])).toBe(held[0]);
  });
});

describe('the lanes of a release step', () => {
  const resource = (item: string) => item.split('#')[0] ?? '';

  it('puts groups that share a resource in one lane, in release order, and spreads the others over the lanes', () => {
    const groups = [['a#1', 'a#2'], ['a#3', 'b#1'], ['b#2'], ['c#1'], ['d#1'], ['d#2'], ['e#1']];
    const lanes = releaseLanes(groups, resource, 3);
    expect(lanes).toEqual([
      [['a#1', 'a#2'], ['a#3', 'b#1'], ['b#2']],
      [['c#1'], ['e#1']],
      [['d#1'], ['d#2']],
    ]);
  });

  it('links groups through any resource they share, not only neighbours', () => {
    const lanes = releaseLanes([['a#1'], ['b#1'], ['c#1', 'a#2'], ['b#2']], resource, 10);
    expect(lanes).toEqual([
      [['a#1'], ['c#1', 'a#2']],
      [['b#1'], ['b#2']],
    ]);
  });

  it('uses no more lanes than it is given or than it has sets of linked groups, and none for nothing', () => {
    expect(releaseLanes([['a#1'], ['a#2'], ['a#3']], resource, 10)).toEqual([[['a#1'], ['a#2'], ['a#3']]]);
    expect(releaseLanes([['a#1'], ['b#1'], ['c#1']], resource, 1)).toEqual([[['a#1'], ['b#1'], ['c#1']]]);
    expect(releaseLanes([], resource, 10)).toEqual([]);
  });
});

describe('gap markers owed for counted events', () => {
  const webhook = { id: 'wh_a', tenantId: 'ten_a' };
  const count = {
    key: 'switch_drop#t:1',
    reason: 'switch_drop' as const,
    resource: 't:1',
    dropped: 7,
    sent: 3,
    since: 1_000,
    lastAt: 5_000,
  };

  it('stands for the events no sent marker stands for, as the same delivery each time it is made from the same count', () => {
    const marker = gapMarkerDelivery(webhook, count);
    expect(marker).toMatchObject({
      webhookId: 'wh_a',
      tenantId: 'ten_a',
      attempt: 1,
      events: [
        { type: 'sluice.gap', resource: 't:1', data: { dropped: 4, reason: 'switch_drop' }, created_at: new Date(5_000).toISOString() },
      ],
    });
    expect(gapMarkerDelivery(webhook, count)).toEqual(marker);
  });

  it("stands for held deliveries a webhook lost (TTL-deleted) with a retention marker on the webhook's resource, until one is sent", () => {
    const lost = lostHeldCount({ resource: 'p:1', heldLost: { count: 5, sent: 2, at: 9_000 } });
    expect(lost && gapMarkerDelivery(webhook, lost).events).toMatchObject([
      { type: 'sluice.gap', resource: 'p:1', data: { dropped: 3, reason: 'retention' }, created_at: new Date(9_000).toISOString() },
    ]);
    expect(lostHeldCount({ resource: 'p:1', heldLost: { count: 5, sent: 5, at: 9_000 } })).toBeUndefined();
    expect(lostHeldCount({ resource: 'p:1' })).toBeUndefined();
  });

  it('counts a discarded delivery one per event, and a discarded marker for the events it stood for under its own reason', () => {
    const [gap] = gapMarkerDelivery(webhook, count).events;
    const retention = { ...gap, id: 'evt_r', data: { dropped: 2, reason: 'retention' as const } } as NonNullable<typeof gap>;
    const events = [event(1, 't:1'), gap as NonNullable<typeof gap>, event(2, 't:1'), retention];
    expect(gapCounts(events, 'switch_drop')).toEqual([
      { reason: 'switch_drop', dropped: 6 },
      { reason: 'retention', dropped: 2 },
    ]);
    expect(gapCounts(events, 'held_overflow')).toEqual([
      { reason: 'held_overflow', dropped: 2 },
      { reason: 'switch_drop', dropped: 4 },
      { reason: 'retention', dropped: 2 },
    ]);
    expect(eventCount(events)).toBe(2);
  });

  it('has other ids when the count grew, was partly sent, or began again', () => {
    const ids = [count, { ...count, dropped: 8 }, { ...count, sent: 4 }, { ...count, since: 2_000 }].map((c) => {
      const marker = gapMarkerDelivery(webhook, c);
      return [marker.deliveryId, marker.events[0]?.id];
    });
    expect(new Set(ids.map(([msg]) => msg)).size).toBe(4);
    expect(new Set(ids.map(([, evt]) => evt)).size).toBe(4);
  });
});

describe('delivery outbox', () => {
  const sink = () => {
    const sends: DeliveryMessage[][] = [];
    return { sends, send: async (messages: readonly DeliveryMessage[]) => void sends.push([...messages]) };
  };
  const one = (resource: string): DeliveryMessage => ({
    deliveryId: `msg_${resource}`,
    tenantId: 'ten_a',
    webhookId: 'wh_a',
    events: [ev(`evt_${resource}`, resource, 1)],
    attempt: 1,
  });

  it('sends as soon as every running turn waits on it, as one merged delivery', async () => {
    const target = sink();
    const outbox = new DeliveryOutbox(target, 10_000);
    outbox.join('ten_a');
    outbox.join('ten_a');
    const first = outbox.send([one('o:1')]);
    await Promise.resolve();
    expect(target.sends).toHaveLength(0);
    const second = outbox.send([one('o:2')]);
    await Promise.all([first, second]);
    expect(target.sends).toHaveLength(1);
    expect(target.sends[0]?.[0]?.events.map((e) => e.resource)).toEqual(['o:1', 'o:2']);
  });

  it('sends what waits when a turn ends without sending, or after the longest wait', async () => {
    const target = sink();
    const outbox = new DeliveryOutbox(target, 30);
    outbox.join('ten_a');
    outbox.join('ten_a');
    outbox.join('ten_a');
    const sent = outbox.send([one('o:1')]);
    outbox.leave('ten_a');
    const started = performance.now();
    await sent;
    // The third turn never sends: the first does not wait for it longer than 30 ms.
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(target.sends).toHaveLength(1);
  });

  it("does not hold a tenant's deliveries for another tenant's turns", async () => {
    const target = sink();
    const outbox = new DeliveryOutbox(target, 10_000);
    outbox.join('ten_a');
    outbox.join('ten_b');
    outbox.join('ten_b');
    // ten_b's turns are still running (a slow lookup, a long turn): ten_a's delivery goes at once.
    await outbox.send([one('o:1')]);
    expect(target.sends).toHaveLength(1);
    const b = (resource: string): DeliveryMessage => ({ ...one(resource), tenantId: 'ten_b', webhookId: 'wh_b' });
    const first = outbox.send([b('o:2')]);
    await Promise.resolve();
    expect(target.sends).toHaveLength(1);
    await Promise.all([first, outbox.send([b('o:3')])]);
    expect(target.sends.map((s) => s.map((m) => m.events.length))).toEqual([[1], [2]]);
  });

  it('fails every turn whose deliveries could not be sent', async () => {
    const outbox = new DeliveryOutbox({ send: () => Promise.reject(new Error('SQS down')) }, 10_000);
    outbox.join('ten_a');
    outbox.join('ten_a');
    const sends = [outbox.send([one('o:1')]), outbox.send([one('o:2')])];
    for (const send of sends) await expect(send).rejects.toThrow('SQS down');
  });
});

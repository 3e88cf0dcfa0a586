import { describe, expect, it } from 'vitest';
import { MAX_DELIVERY_BYTES, planDeliveries, subscribedResources } from '../../functions/core/deliveries.ts';
import type { DeliveredEvent, Webhook } from '../../functions/core/model.ts';
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

  it('sends an event to webhooks on the resource and on every parent, filtered by type and status', () => {
    const hooks: Record<string, Webhook[]> = {
      'story:1': [webhook('wh_story', 'story:1')],
      'task:2': [webhook('wh_task', 'task:2', ['story.*']), webhook('wh_off', 'task:2', ['*'], 'disabled')],
      'project:3': [webhook('wh_project', 'project:3', ['task.*'])],
    };
    const planned = planDeliveries([event(1, 'story:1', ['task:2', 'project:3'])], (r) => hooks[r] ?? []);
    expect(planned.map((d) => d.webhook.id).sort()).toEqual(['wh_story', 'wh_task']);
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

/**
 * A quick endpoint sent more deliveries than its rate: past 5 seconds of its time, they
 * are held and released packed, up to 100 events a POST, where each waited in the deliver
 * queue for a POST of its own, further behind for as long as they came.
 */
import { describe, expect, it } from 'vitest';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { createTenant, createWebhook, publish } from '../support/api.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;

withSandbox(
  {
    canary: false,
    // 5 POSTs a second: 60 deliveries would take 12 s, one POST each.
    config: { endpointRatePerSecond: 5 },
  },
  (s, r) => {
    [sandbox, receiver] = [s, r];
  },
);

describe('a quick endpoint sent more deliveries than its rate', () => {
  it('gets them held past 5 seconds of its time and released packed: all of them, in few POSTs, within seconds', {
    timeout: 60_000,
  }, async () => {
    const tenant = await createTenant(sandbox, 'over-rate');
    await createWebhook(sandbox, tenant.key, { resource: 'board:1', url: `${receiver.url}/over-rate` });
    const accepted: string[] = [];
    // 600 events on 600 tasks of one board, 60 requests at once. A distributor's batch
    // merges its turns' deliveries (10 objects a batch here): 60 deliveries or more.
    await Promise.all(
      Array.from({ length: 60 }, async (_, r) => {
        const events = Array.from({ length: 10 }, (_, j) => ({
          resource: `task:${r * 10 + j}`,
          parents: ['board:1'],
          type: 'task.changed',
          data: { n: r * 10 + j },
        }));
        const answer = await publish(sandbox, tenant.key, events);
        for (const e of answer.body.events) if (e.status === 'accepted') accepted.push(e.id);
      }),
    );
    expect(accepted).toHaveLength(600);
    const started = Date.now();
    await receiver.waitFor(() => {
      const got = new Set(receiver.acceptedEvents('/over-rate').map((e) => e.id));
      return accepted.every((id) => got.has(id));
    }, 30_000);
    const posts = receiver.received.filter((r) => r.path === '/over-rate' && r.json.events[0]?.type !== 'webhook.ping');
    // 5 s of its time go a delivery a POST (30 and a second's burst); the rest, held, up to 100 events a POST.
    expect(Math.max(...posts.map((r) => r.json.events.length))).toBeGreaterThan(10);
    expect(posts.length).toBeLessThan(50);
    // At a POST each, 60 deliveries at 5 a second take 12 s.
    expect(Date.now() - started).toBeLessThan(12_000);
    expect(sandbox.metrics.total('DeliveriesHeld')).toBeGreaterThan(0);
    expect(sandbox.metrics.total('EventsHeldOverflow')).toBe(0);
    expect(receiver.acceptedEvents('/over-rate').filter((e) => e.type === 'sluice.gap')).toEqual([]);
  });
});

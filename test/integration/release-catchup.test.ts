/**
 * A release keeps up with a webhook on a parent whose children change faster than a
 * page of held parts a second: the endpoint's rate caps its POSTs, not its parts.
 */
import { describe, expect, it } from 'vitest';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook, publish } from '../support/api.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;

withSandbox(
  {
    canary: false,
    // Deployed defaults (50 POSTs a second to an endpoint), but a quick quarantine and
    // probe, and a held cap of 300 that a release of 50 parts a second would fill in seconds.
    config: { quarantineAfterFailures: 2, probeIntervalMinSeconds: 1, probeIntervalMaxSeconds: 2, heldPerWebhook: 300 },
  },
  (s, r) => {
    [sandbox, receiver] = [s, r];
  },
);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('a release after a quarantine', () => {
  it('catches up with 100 resources a second under one parent, dropping none', { timeout: 120_000 }, async () => {
    const tenant = await createTenant(sandbox, 'busy');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'proj:1', url: `${receiver.url}/flow` });
    const health = async () => (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health;
    receiver.answer('/flow', 500);

    const accepted = new Set<string>();
    let running = true;
    const publisher = (async () => {
      for (let i = 0; running; i++) {
        // 10 events a request, 10 requests a second: 100 events a second, on 100 tasks of proj:1.
        const events = Array.from({ length: 10 }, (_, j) => ({
          resource: `task:${(i * 10 + j) % 100}`,
          parents: ['proj:1'],
          type: 'task.changed',
          data: i,
        }));
        const answer = await publish(sandbox, tenant.key, events);
        for (const e of answer.body.events) if (e.status === 'accepted') accepted.add(e.id);
        await sleep(100);
      }
    })();

    let state = '';
    for (let i = 0; i < 100 && state !== 'quarantined'; i++, await sleep(100)) state = (await health()).state;
    expect(state).toBe('quarantined');
    receiver.answer('/flow', 200);
    for (let i = 0; i < 100 && state !== 'healthy'; i++, await sleep(100)) state = (await health()).state;
    expect(state).toBe('healthy');
    // Long enough for a release of 50 parts a second to fill the cap of 300 (inflow 100 a second).
    await sleep(12_000);
    // Caught up (a step sent everything held), the deliveries that keep coming are not held.
    const heldBefore = sandbox.metrics.total('DeliveriesHeld');
    await sleep(3_000);
    expect(sandbox.metrics.total('DeliveriesHeld')).toBe(heldBefore);
    running = false;
    await publisher;
    for (let i = 0; i < 120 && (await health()).held > 0; i++) await sleep(500);

    expect(sandbox.metrics.total('EventsHeldOverflow')).toBe(0);
    await receiver.waitFor(() => {
      const got = new Set(receiver.acceptedEvents('/flow').map((e) => e.id));
      return [...accepted].every((id) => got.has(id));
    }, 20_000);
    expect(receiver.acceptedEvents('/flow').filter((e) => e.type === 'sluice.gap')).toEqual([]);
  });
});

/**
 * What order a subscriber sees a resource's events and gap markers in around a kill
 * switch's lift (README "Kill switches"), checked by a real receiver.
 */
import { describe, expect, it } from 'vitest';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook, publish } from '../support/api.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;

withSandbox({ config: { retryScheduleSeconds: [0, 6], retryJitter: 0, switchCacheMs: 300 } }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

const settle = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('a webhook drop switch lifted while an earlier delivery waits for its retry', () => {
  it('sends the gap marker first, and the earlier event at its retry, after the marker', async () => {
    const tenant = await createTenant(sandbox, 'drop-retry');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'dr:1', url: `${receiver.url}/drop-retry` });
    let failed = 0;
    receiver.answer('/drop-retry', async ({ ping }) => (ping || failed++ > 0 ? 200 : 500));

    // seq 1 fails its first attempt: its retry waits 6 s, in the deliver queue.
    await publish(sandbox, tenant.key, [{ resource: 'dr:1', type: 'a.b', data: 1 }]);
    await receiver.waitFor(() => receiver.deliveries('/drop-retry').length === 1);
    const drop = await call(sandbox, 'PUT', '/v1/admin/switches', {
      key: sandbox.adminKey,
      body: { scope: 'webhook', tenant: tenant.id, target: hook.id, action: 'drop' },
    });
    await settle(700);
    // seq 2 is dropped under the switch, which is lifted before seq 1's retry is due.
    await publish(sandbox, tenant.key, [{ resource: 'dr:1', type: 'a.b', data: 2 }]);
    await settle(700);
    await call(sandbox, 'DELETE', `/v1/admin/switches/${drop.body.id}`, { key: sandbox.adminKey });
    await receiver.waitFor(() => receiver.acceptedEvents('/drop-retry').length === 2, 15_000);

    // README: the marker (for seq 2) goes out at the lift; seq 1, not held, comes at its retry, after it.
    const seen = receiver.acceptedEvents('/drop-retry');
    expect(seen.map((e) => (e.type === 'sluice.gap' ? e.data : e.seq))).toEqual([{ dropped: 1, reason: 'switch_drop' }, 1]);
    const [marker, older] = seen;
    expect(Date.parse(String(older?.created_at))).toBeLessThan(Date.parse(String(marker?.created_at)));
  }, 30_000);
});

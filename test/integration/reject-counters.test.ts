/**
 * SPEC §2: an object's meta item comes with its drop and reject counters. Events refused
 * for the object's rate or queue cap are counted per object (beside the meta item, by the
 * API's containers, at most a second behind), and GET /v1/admin/queues shows them: the
 * one place on-call sees which object a producer is being refused on, besides the log.
 */
import { describe, expect, it } from 'vitest';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, publish } from '../support/api.ts';
import { withSandbox } from '../support/sandbox.ts';

const SWITCH_CACHE_MS = 200;
let sandbox: Sandbox;
let a: { id: string; key: string };

withSandbox({ canary: false, config: { switchCacheMs: SWITCH_CACHE_MS } }, async (s) => {
  sandbox = s;
  a = await createTenant(sandbox, 'refused');
});

describe("an object's reject counters (SPEC §2)", () => {
  it('count the events refused for its rate, and GET /v1/admin/queues shows them', async () => {
    // Paused, the object keeps its events waiting, so it stays listed.
    const paused = await call(sandbox, 'PUT', '/v1/admin/switches', {
      key: sandbox.adminKey,
      body: { scope: 'resource', tenant: a.id, target: 'rejects:1', action: 'pause' },
    });
    expect(paused.status).toBe(200);
    // Past the switch cache of the distributor, which would otherwise drain the object.
    await new Promise((resolve) => setTimeout(resolve, 2 * SWITCH_CACHE_MS));
    // Past its burst (200) at once: the first request refused anything is counted at once,
    // the later ones a second after that, with the object's next request.
    const refusedBy: number[] = [];
    const send = async (count: number) => {
      const sent = await publish(
        sandbox,
        a.key,
        Array.from({ length: count }, (_, i) => ({ resource: 'rejects:1', type: 'a.b', data: i })),
      );
      refusedBy.push(sent.body.events.filter((e: { error?: { code: string } }) => e.error?.code === 'rate_limited').length);
    };
    const started = Date.now();
    for (let r = 0; r < 4; r++) await send(100);
    const first = refusedBy.find((n) => n > 0) ?? 0;
    expect(first).toBeGreaterThan(0);
    expect(refusedBy.reduce((n, m) => n + m, 0)).toBeGreaterThan(first);
    await publish(sandbox, a.key, [{ resource: 'rejects:2', type: 'a.b', data: 0 }]);

    type Row = { resource: string; tenant: string; rejected: { rate_limited: number; queue_full: number; last_at: string } | null };
    const rows = async () => (await call(sandbox, 'GET', '/v1/admin/queues?limit=100', { key: sandbox.adminKey })).body.data as Row[];
    const counted = async () => (await rows()).find((r) => r.tenant === a.id && r.resource === 'rejects:1')?.rejected;
    if (Date.now() - started < 1_000) expect(await counted()).toMatchObject({ rate_limited: first, queue_full: 0 });
    // A second on, the object's next request (one event, refused or not) brings the rest.
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    await send(1);
    const all = await counted();
    expect(all).toMatchObject({ rate_limited: refusedBy.reduce((n, m) => n + m, 0), queue_full: 0 });
    expect(Date.parse(all?.last_at ?? '')).toBeGreaterThan(Date.now() - 60_000);
    const calm = (await rows()).find((r) => r.tenant === a.id && r.resource === 'rejects:2');
    if (calm) expect(calm.rejected).toBeNull();
    const switches = (await call(sandbox, 'GET', '/v1/admin/switches', { key: sandbox.adminKey })).body.data as Array<{
      id: string;
      target?: string;
    }>;
    for (const sw of switches.filter((w) => w.target === 'rejects:1')) {
      expect((await call(sandbox, 'DELETE', `/v1/admin/switches/${sw.id}`, { key: sandbox.adminKey })).status).toBe(204);
    }
  });
});

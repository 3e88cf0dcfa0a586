/**
 * The second incident played long: one customer's endpoint fails for longer than the
 * retention period. The delivery function runs against the sandbox's own tables, with
 * the deliver queue simulated as a list of messages due at an injected clock, so days
 * pass in seconds (test/support/longrun.ts): what it holds, probes and queues stays
 * bounded, and once it answers again it gets what is still within retention, in order,
 * and one marker for the rest.
 */
import { describe, expect, it } from 'vitest';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { DAY, HOUR, play } from '../support/longrun.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;

withSandbox({ config: { deliveryTimeoutMs: 1_000 } }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

describe('an endpoint that fails for longer than the retention period', () => {
  it('holds, probes at most hourly, keeps the queue small, and on recovery gets what is within retention in order and one marker for the rest', async () => {
    const failFor = 10 * DAY;
    const { deps, tenant, hook, queue, failing, delivered, markers, seq, start } = await play(sandbox, receiver, {
      name: 'longrun-quarantined',
      config: { disableAfterQuarantineSeconds: 30 * 86_400 },
      recovery: 'probe',
      failFor,
      every: 20 * 60_000,
    });
    // Bounded while it fails: at most one probe an hour after the first day, a few messages queued.
    expect(Math.max(...failing.slice(24).map((h) => h.probes))).toBeLessThanOrEqual(2);
    expect(Math.max(...failing.map((h) => h.queued))).toBeLessThanOrEqual(20);
    // Recovered: held count back to 0, nothing left queued.
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    expect(webhook?.heldCount).toBe(0);
    expect(webhook?.health.state).toBe('healthy');
    expect(queue.due).toEqual([]);
    const seqs = delivered.map((e) => e.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(new Set(seqs).size).toBe(seqs.length);
    const dropped = markers.reduce((sum, m) => sum + m.dropped, 0);
    expect(markers.every((m) => m.reason === 'retention')).toBe(true);
    // Every delivery made while it failed is delivered or counted by a marker.
    expect(seqs.length + dropped).toBe(seq);
    // What was still within the retention period was delivered.
    for (const e of delivered) expect(Date.parse(String(e.created_at))).toBeGreaterThan(start + failFor - 7 * DAY - HOUR);
  }, 600_000);

  it('disabled after 3 days and re-enabled by its owner after 10: the owner told once, the held cap kept with what is within retention, and markers with exact counts for the rest', async () => {
    const { deps, tenant, hook, queue, delivered, markers, seq, start } = await play(sandbox, receiver, {
      name: 'longrun-disabled',
      config: { heldPerWebhook: 200 },
      recovery: 'owner',
      failFor: 10 * DAY,
      every: 20 * 60_000,
    });
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    expect(webhook?.heldCount).toBe(0);
    expect(queue.due).toEqual([]);
    const seqs = delivered.map((e) => e.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(seqs.length + markers.reduce((sum, m) => sum + m.dropped, 0)).toBe(seq);
    // The cap held 200 the whole while. What it held first outlived the retention period and
    // made way, once past it, for what came after (pruneExpiredHeld): the owner gets the 200
    // newest it could hold, all within retention, and markers for the rest.
    const dropped = (reason: string) => markers.filter((m) => m.reason === reason).reduce((sum, m) => sum + m.dropped, 0);
    expect(dropped('retention')).toBe(200);
    expect(seqs).toHaveLength(200);
    for (const e of delivered) expect(Date.parse(String(e.created_at))).toBeGreaterThan(start + 10 * DAY - 7 * DAY);
    expect(dropped('held_overflow')).toBe(seq - 400);
    // Past the cap while quarantined it pages (EventsHeldOverflow); once sluice disabled it, it does
    // not page again (webhook-disabled did, once).
    const whileDisabled = sandbox.metrics.total('EventsDiscardedWhileDisabled');
    expect(whileDisabled).toBeGreaterThan(0);
    expect(sandbox.metrics.total('EventsHeldOverflow') + whileDisabled).toBe(seq - 400);
    expect(sandbox.notifier.notices.filter((n) => n.webhook === hook.id)).toMatchObject([{ reason: 'quarantine_expired' }]);
    expect(sandbox.metrics.total('WebhooksDisabled')).toBe(1);
  }, 600_000);
});

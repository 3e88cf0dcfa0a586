/**
 * Stopping the sandbox lets work under way end first: the API's requests being
 * handled, before their AWS clients are closed and the emulators stop; and what was
 * answered 202 is delivered after a restart on the same data directory.
 */
import { mkdtempSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startSandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook, publish } from '../support/api.ts';
import { startReceiver } from '../support/receiver.ts';

describe('sandbox stop', () => {
  it('waits for a request the API is still handling', async () => {
    const sandbox = await startSandbox({ port: 0, canary: false });
    // An endpoint that answers the webhook's verification ping only after 600 ms.
    let answeredAt = 0;
    const slow = http.createServer((req, res) => {
      req.resume();
      setTimeout(() => {
        answeredAt = Date.now();
        res.writeHead(204).end();
      }, 600);
    });
    await new Promise<void>((resolve) => slow.listen(0, '127.0.0.1', resolve));
    try {
      const { key } = await createTenant(sandbox, 'stopping');
      const url = `http://127.0.0.1:${(slow.address() as AddressInfo).port}/hook`;
      const creating = call(sandbox, 'POST', '/v1/webhooks', { key, body: { resource: 'doc:1', url } }).catch((error: Error) => error);
      await new Promise((resolve) => setTimeout(resolve, 150));

      await sandbox.stop();

      // The ping was answered (and the webhook's write made) before the stop returned.
      expect(answeredAt).toBeGreaterThan(0);
      // And its client got the answer: a request whose work was done but whose connection
      // was closed under it, a tenant made or an event accepted, looked failed to its
      // caller, which made another (the canary its tenant) or sent it again.
      expect(await creating).toMatchObject({ status: 201 });
    } finally {
      await sandbox.stop();
      await new Promise<void>((resolve) => slow.close(() => resolve()));
    }
  });

  it('delivers an event answered 202 just before the stop at once after a restart on the same data directory', async () => {
    const receiver = await startReceiver();
    const dataDir = mkdtempSync(join(tmpdir(), 'sluice-stop-'));
    const adminKey = `ak_${'s'.repeat(43)}`;
    const first = await startSandbox({ port: 0, dataDir, adminKey, canary: false });
    let second: Awaited<ReturnType<typeof startSandbox>> | undefined;
    try {
      const { key } = await createTenant(first, 'restarted');
      await createWebhook(first, key, { resource: 'doc:1', url: `${receiver.url}/hook` });
      expect((await publish(first, key, [{ resource: 'doc:1', type: 'doc.saved', data: { n: 1 } }])).status).toBe(202);

      // Stopped right after the 202, while the doorbell and the delivery are on their way.
      await first.stop();
      second = await startSandbox({ port: 0, dataDir, adminKey, canary: false });

      // Within seconds, not after a queue's visibility timeout (2 to 3 minutes).
      await receiver.waitFor(() => receiver.deliveries('/hook').length > 0, 15_000);
      expect(receiver.events('/hook').filter((e) => e.type === 'doc.saved')).toMatchObject([{ seq: 1, data: { n: 1 } }]);
    } finally {
      await first.stop();
      await second?.stop();
      await receiver.close();
    }
  }, 30_000);

  it("delivers a flooding tenant's doorbells that a receive brought during the stop at once after a restart on the same data directory", async () => {
    const receiver = await startReceiver();
    const dataDir = mkdtempSync(join(tmpdir(), 'sluice-stop-'));
    const adminKey = `ak_${'b'.repeat(43)}`;
    // A low bulkLaneAfterRingsPerSecond puts the flood in the bulk lane, whose poller is
    // still receiving batches of it when the stop comes. 400 objects, not more: each is a
    // POST to the receiver, which answers on the thread the sandbox's functions run on, so
    // 2,000 of them on a loaded 2-core machine took most of the wait for answers alone.
    const settings = { port: 0, dataDir, adminKey, canary: false, config: { bulkLaneAfterRingsPerSecond: 5 } };
    const first = await startSandbox(settings);
    let second: Awaited<ReturnType<typeof startSandbox>> | undefined;
    try {
      const { key } = await createTenant(first, 'flooding');
      await createWebhook(first, key, { resource: 'project:f', url: `${receiver.url}/flood` });
      const answers = await Promise.all(
        Array.from({ length: 4 }, (_, r) =>
          publish(
            first,
            key,
            Array.from({ length: 100 }, (_, i) => ({ resource: `obj:${r}-${i}`, parents: ['project:f'], type: 'x.y', data: {} })),
          ),
        ),
      );
      for (const answer of answers) expect(answer.status).toBe(202);

      await first.stop();
      second = await startSandbox(settings);

      // Within seconds, not after the bulk lane's visibility timeout (2 minutes): the
      // batches given back at the stop are visible again.
      const objects = () => new Set(receiver.events('/flood').map((e) => e.resource)).size;
      await receiver.waitFor(() => objects() === 400, 40_000).catch(() => undefined);
      expect(objects()).toBe(400);
    } finally {
      await first.stop();
      await second?.stop();
      await receiver.close();
    }
  }, 120_000);
});

/**
 * Stopping the sandbox lets work under way end first: the API's requests being
 * handled, before their AWS clients are closed and the emulators stop.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { startSandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant } from '../support/api.ts';

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
      // Its client loses the answer when the server closes; the request's work goes on.
      const creating = call(sandbox, 'POST', '/v1/webhooks', { key, body: { resource: 'doc:1', url } }).catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, 150));

      await sandbox.stop();

      // The ping was answered (and the webhook's write made) before the stop returned.
      expect(answeredAt).toBeGreaterThan(0);
      await creating;
    } finally {
      await sandbox.stop();
      await new Promise<void>((resolve) => slow.close(() => resolve()));
    }
  });
});

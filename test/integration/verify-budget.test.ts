/**
 * A tenant's URL verifications are bounded: each ping may hold its request for the whole
 * timeout, and requests share the account's Lambda concurrency with every tenant's.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { VERIFICATIONS_PER_TENANT } from '../../functions/app/webhooks.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook } from '../support/api.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;
withSandbox({ canary: false, config: { deliveryTimeoutMs: 3_000 } }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

describe('URL verifications of one tenant', () => {
  it('are at most so many at once: the rest are refused with 429 and Retry-After, and other tenants are not', async () => {
    const tenant = await createTenant(sandbox, 'pinger');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'p:1', url: `${receiver.url}/ok` });
    // An endpoint that takes connections and never answers.
    let open = 0;
    let peak = 0;
    const tarpit = http.createServer((request) => {
      open++;
      peak = Math.max(peak, open);
      request.on('close', () => open--);
    });
    await new Promise<void>((resolve) => tarpit.listen(0, '127.0.0.1', resolve));
    const port = (tarpit.address() as AddressInfo).port;
    try {
      const sending = Array.from({ length: 60 }, (_, i) =>
        call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { url: `http://127.0.0.1:${port}/t${i}` } }),
      );
      // Meanwhile another tenant's webhook is made as usual.
      const other = await createTenant(sandbox, 'bystander');
      const made = await call(sandbox, 'POST', '/v1/webhooks', {
        key: other.key,
        body: { resource: 'b:1', url: `${receiver.url}/bystander` },
      });
      const answers = await Promise.all(sending);

      expect(made.status).toBe(201);
      // The budget is per window of a ping's timeout: requests that straddle two windows may
      // have both windows' pings open at once (a machine under load spreads the 60 out).
      expect(peak).toBeLessThanOrEqual(2 * VERIFICATIONS_PER_TENANT);
      const refused = answers.filter((a) => a.status === 429);
      expect(refused.length).toBeGreaterThanOrEqual(60 - 2 * VERIFICATIONS_PER_TENANT);
      for (const answer of refused) {
        expect(answer.body.error.code).toBe('rate_limited');
        expect(Number(answer.headers.get('retry-after'))).toBeGreaterThan(0);
      }
      // The pings that went out timed out: 422, the URL unchanged.
      expect(answers.filter((a) => a.status !== 429).every((a) => a.status === 422)).toBe(true);
      expect((await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.url).toBe(`${receiver.url}/ok`);
    } finally {
      tarpit.closeAllConnections();
      tarpit.close();
    }
  }, 30_000);
});

/**
 * Answers at the limits of what the API accepts: the largest page of the largest
 * webhooks still fits in one Lambda answer (6 MB, API Gateway's Lambda proxy), and a
 * webhook's attempts are listed whole however large its deliveries' events are.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { WebhookStore } from '../../functions/adapters/webhook-store.ts';
import { newId } from '../../functions/core/ids.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook, publish } from '../support/api.ts';
import { webhookFixture } from '../support/fixtures.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

/** A Lambda function's synchronous answer, the whole JSON of it, is at most 6 MB. */
const LAMBDA_RESPONSE_BYTES = 6 * 1024 * 1024;

let sandbox: Sandbox;
let receiver: Receiver;
withSandbox({ canary: false }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

describe('a page of the largest webhooks', () => {
  it('fits in one Lambda answer, and the next page has the rest', async () => {
    const tenant = await createTenant(sandbox, 'many-hooks', { max_webhooks: 500 });
    const store = new WebhookStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable });
    // Each webhook as large as validation allows: a 2,000-character URL, 50 types of
    // 200 characters, a 500-character description, a 200-character resource.
    const types = Array.from({ length: 50 }, (_, i) => `${'t'.repeat(196)}_${String(i).padStart(3, '0')}`);
    const at = new Date().toISOString();
    const ids: string[] = [];
    for (let batch = 0; batch < 500; batch += 25) {
      await Promise.all(
        Array.from({ length: 25 }, async () => {
          const id = newId('wh', Date.now());
          ids.push(id);
          await store.put(
            webhookFixture({
              id,
              tenantId: tenant.id,
              resource: 'r'.repeat(200),
              url: `https://example.com/${'p'.repeat(1_980)}`,
              types,
              description: 'é'.repeat(500),
              secrets: ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'],
              createdAt: at,
              updatedAt: at,
            }),
          );
        }),
      );
    }

    const seen: string[] = [];
    let after: string | undefined;
    for (let page = 0; page < 10; page++) {
      const response = await fetch(`${sandbox.url}/v1/webhooks?limit=500${after ? `&after=${after}` : ''}`, {
        headers: { authorization: `Bearer ${tenant.key}` },
      });
      const text = await response.text();
      expect(response.status).toBe(200);
      // What the API function returns to API Gateway: the body as a JSON string in its answer.
      const lambdaAnswer = JSON.stringify({ statusCode: 200, headers: { 'content-type': 'application/json' }, body: text });
      expect(Buffer.byteLength(lambdaAnswer)).toBeLessThanOrEqual(LAMBDA_RESPONSE_BYTES);
      const body = JSON.parse(text) as { data: Array<{ id: string }>; has_more: boolean };
      expect(body.data.length).toBeGreaterThan(0);
      seen.push(...body.data.map((webhook) => webhook.id));
      if (!body.has_more) break;
      after = seen.at(-1);
    }
    expect(seen).toEqual([...ids].sort());
    expect((await call(sandbox, 'GET', '/v1/webhooks?limit=1', { key: tenant.key })).body.has_more).toBe(true);
  }, 120_000);
});

describe('the attempts of a webhook whose deliveries carry large events', () => {
  it('are listed up to the limit asked, newest first, though their logged events pass what one DynamoDB query reads (1 MB)', async () => {
    const tenant = await createTenant(sandbox, 'large-deliveries');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'big:1', url: `${receiver.url}/large` });
    // Random bytes do not compress: each delivery's log item keeps about 48 KB of its event, 30 of them over 1 MB.
    for (let i = 0; i < 30; i++) {
      const published = await publish(sandbox, tenant.key, [
        { resource: 'big:1', type: 'a.b', data: randomBytes(48_000).toString('base64') },
      ]);
      expect(published.status).toBe(202);
      await receiver.waitFor(() => receiver.acceptedEvents('/large').length === i + 1, 10_000);
    }

    const attempts = await call(sandbox, 'GET', `/v1/webhooks/${hook.id}/attempts?limit=50`, { key: tenant.key });

    expect(attempts.status).toBe(200);
    const delivered = receiver.deliveries('/large').map((delivery) => delivery.headers['webhook-id']);
    expect(attempts.body.data.map((attempt: { delivery_id: string }) => attempt.delivery_id)).toEqual(delivered.reverse());
    const newest = await call(sandbox, 'GET', `/v1/webhooks/${hook.id}/attempts?limit=25`, { key: tenant.key });
    expect(newest.body.data).toEqual(attempts.body.data.slice(0, 25));
  }, 60_000);
});

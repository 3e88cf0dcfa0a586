/**
 * Webhooks (SPEC §3 Webhooks): created only after the endpoint answers a signed
 * `webhook.ping`; the secret is shown once.
 */

import type { TenantStore } from '../adapters/tenant-store.ts';
import type { Sender } from '../adapters/webhook-sender.ts';
import type { WebhookStore } from '../adapters/webhook-store.ts';
import { deliveryBody } from '../core/deliveries.ts';
import { ApiError } from '../core/errors.ts';
import { newId } from '../core/ids.ts';
import { SLUICE_VERSION, type Webhook } from '../core/model.ts';
import { decideAttempt } from '../core/outcome.ts';
import { deliveryHeaders, generateSecret } from '../core/signing.ts';
import type { WebhookInput, WebhookPatch } from '../core/validation.ts';

export interface WebhookServiceDeps {
  readonly webhooks: WebhookStore;
  readonly tenants: Pick<TenantStore, 'get'>;
  readonly send: Sender;
  readonly timeoutMs: number;
  readonly now: () => number;
}

/** A webhook as the API shows it: never its secrets. */
export function webhookView(webhook: Webhook) {
  return {
    id: webhook.id,
    resource: webhook.resource,
    url: webhook.url,
    types: webhook.types,
    description: webhook.description,
    status: webhook.status,
    created_at: webhook.createdAt,
    updated_at: webhook.updatedAt,
  };
}

export class WebhookService {
  readonly #deps: WebhookServiceDeps;

  constructor(deps: WebhookServiceDeps) {
    this.#deps = deps;
  }

  async create(tenantId: string, input: WebhookInput) {
    const { webhooks, tenants, now } = this.#deps;
    const tenant = await tenants.get(tenantId);
    if (!tenant) throw new ApiError('unauthorized', 'The API key does not belong to a tenant.');
    const at = new Date(now()).toISOString();
    const webhook: Webhook = {
      id: newId('wh', now()),
      tenantId,
      resource: input.resource,
      url: input.url,
      types: input.types,
      description: input.description,
      status: 'active',
      secrets: [generateSecret()],
      createdAt: at,
      updatedAt: at,
    };
    await webhooks.reservePlace(tenantId, tenant.limits.max_webhooks);
    try {
      await this.#verify(webhook, webhook.url);
      await webhooks.put(webhook);
    } catch (error) {
      await webhooks.releasePlace(tenantId);
      throw error;
    }
    return { ...webhookView(webhook), secret: webhook.secrets[0] as string };
  }

  async list(tenantId: string) {
    return (await this.#deps.webhooks.list(tenantId)).map(webhookView);
  }

  async get(tenantId: string, id: string) {
    return webhookView(await this.#find(tenantId, id));
  }

  async update(tenantId: string, id: string, patch: WebhookPatch) {
    const current = await this.#find(tenantId, id);
    if (patch.url !== undefined && patch.url !== current.url) await this.#verify(current, patch.url);
    const updated = await this.#deps.webhooks.update(tenantId, id, patch, new Date(this.#deps.now()).toISOString());
    if (!updated) throw notFound(id);
    return webhookView(updated);
  }

  async delete(tenantId: string, id: string): Promise<void> {
    if (!(await this.#deps.webhooks.delete(tenantId, id))) throw notFound(id);
  }

  async #find(tenantId: string, id: string): Promise<Webhook> {
    const webhook = await this.#deps.webhooks.get(tenantId, id);
    if (!webhook) throw notFound(id);
    return webhook;
  }

  /** Sends the signed `webhook.ping`; anything but a 2xx in time refuses the URL. */
  async #verify(webhook: Webhook, url: string): Promise<void> {
    const now = this.#deps.now();
    const ping = {
      id: newId('evt', now),
      seq: 0,
      resource: webhook.resource,
      parents: [],
      type: 'webhook.ping',
      data: {},
      created_at: new Date(now).toISOString(),
    };
    const body = deliveryBody(webhook.id, [ping]);
    const headers = deliveryHeaders(webhook.secrets, newId('msg', now), Math.floor(now / 1000), body, SLUICE_VERSION);
    const result = await this.#deps.send({ url, headers: { ...headers }, body, timeoutMs: this.#deps.timeoutMs });
    if (decideAttempt(result.statusCode) !== 'delivered') {
      const answer = result.statusCode === undefined ? result.error : `HTTP ${result.statusCode}`;
      throw new ApiError(
        'endpoint_verification_failed',
        `The endpoint did not accept the signed webhook.ping (${answer}); it must answer 2xx within ${this.#deps.timeoutMs} ms.`,
      );
    }
  }
}

function notFound(id: string): ApiError {
  return new ApiError('not_found', `No webhook ${id} exists for this tenant.`);
}

/** The nouns of sluice, as they travel between stages. */

export const SLUICE_VERSION = '0.1.0';

/** An event as a producer sends it, after validation. */
export interface EventInput {
  readonly resource: string;
  readonly parents: readonly string[];
  readonly type: string;
  readonly data: unknown;
  /** The producer's idempotency key (`id` in the request), if it sent one. */
  readonly idempotencyKey: string | undefined;
}

/** An accepted event waiting in its object's queue. */
export interface PendingEvent {
  readonly id: string;
  readonly slot: number;
  readonly resource: string;
  readonly parents: readonly string[];
  readonly type: string;
  readonly data: unknown;
  readonly createdAt: string;
}

/** An event as subscribers see it (SPEC §3 Deliveries). */
export interface DeliveredEvent {
  readonly id: string;
  readonly seq: number;
  readonly resource: string;
  readonly parents: readonly string[];
  readonly type: string;
  readonly data: unknown;
  readonly created_at: string;
}

export type WebhookStatus = 'active' | 'disabled';

export interface Webhook {
  readonly id: string;
  readonly tenantId: string;
  readonly resource: string;
  readonly url: string;
  readonly types: readonly string[];
  readonly description: string;
  readonly status: WebhookStatus;
  /** Live signing secrets, newest first. */
  readonly secrets: readonly string[];
  readonly createdAt: string;
  readonly updatedAt: string;
}

export interface TenantLimits {
  readonly max_webhooks: number;
  readonly rate_per_second: number;
  readonly burst: number;
}

export interface Tenant {
  readonly id: string;
  readonly name: string;
  readonly limits: TenantLimits;
  /** The API Gateway usage-plan key the authorizer reports for this tenant. */
  readonly usageKey: string;
  readonly createdAt: string;
}

/** One delivery: up to 100 events for one webhook, the unit that is signed, sent and retried. */
export interface DeliveryMessage {
  readonly deliveryId: string;
  readonly tenantId: string;
  readonly webhookId: string;
  readonly events: readonly DeliveredEvent[];
  /** 1 for the first attempt. */
  readonly attempt: number;
}

/** Who is calling the API, as the authorizer decided. */
export type Principal = { readonly kind: 'admin' } | { readonly kind: 'tenant'; readonly tenantId: string };

/** The identity of one per-object queue. */
export interface ObjectKey {
  readonly tenantId: string;
  readonly resource: string;
}

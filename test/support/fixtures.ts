/** Record factories for tests. */
import { INITIAL_HEALTH } from '../../functions/core/health.ts';
import type { DeliveredEvent, DeliveryMessage, Webhook } from '../../functions/core/model.ts';

export function webhookFixture(overrides: Partial<Webhook> = {}): Webhook {
  return {
    id: 'wh_fixture',
    tenantId: 'ten_fixture',
    resource: 'fixture:1',
    url: 'https://example.test/hook',
    types: ['*'],
    description: '',
    status: 'active',
    secrets: ['whsec_AAAA'],
    previousSecretsExpireAt: [],
    health: INITIAL_HEALTH,
    healthVersion: 0,
    heldCount: 0,
    probeToken: undefined,
    releaseToken: undefined,
    createdAt: '',
    updatedAt: '',
    ...overrides,
  };
}

/** A delivered event of type a.b, created now; tests name what they check. */
export function deliveredEventFixture(
  overrides: Partial<DeliveredEvent> & Pick<DeliveredEvent, 'id' | 'seq' | 'resource'>,
): DeliveredEvent {
  return { parents: [], type: 'a.b', data: {}, created_at: new Date().toISOString(), ...overrides };
}

/** The n-th delivery of one event on `task:1` (seq n) for a webhook, its ids marked with `label`: what a webhook holds. */
export function deliveryFixture(label: string, webhookId: string, n: number): DeliveryMessage {
  return {
    deliveryId: `msg_${label}${String(n).padStart(4, '0')}`,
    tenantId: `ten_${label}`,
    webhookId,
    events: [deliveredEventFixture({ id: `evt_${label}${n}`, seq: n, resource: 'task:1', data: { n } })],
    attempt: 1,
  };
}

/** A first attempt of one event on `resource` (seq n, data n) for a tenant's webhook, its ids made of the resource and n. */
export function resourceDeliveryFixture(tenantId: string, webhookId: string, n: number, resource: string): DeliveryMessage {
  const label = resource.replace(':', '');
  return {
    deliveryId: `msg_${label}${n}`,
    tenantId,
    webhookId,
    events: [deliveredEventFixture({ id: `evt_${label}${n}`, seq: n, resource, data: n })],
    attempt: 1,
  };
}

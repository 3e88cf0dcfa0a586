/**
 * Fan-out and batching (SPEC §2 Fan-out, §3 Deliveries): which webhooks get an
 * event, and how a turn's events become deliveries of at most 100 events and
 * 256 KiB each, per webhook, in seq order.
 */

import type { DeliveredEvent, Webhook } from './model.ts';
import { anyTypeMatches } from './patterns.ts';

export const MAX_EVENTS_PER_DELIVERY = 100;
export const MAX_DELIVERY_BYTES = 256 * 1024;

/** The resources an event is about: its own and each parent, once each. */
export function subscribedResources(event: Pick<DeliveredEvent, 'resource' | 'parents'>): string[] {
  return [...new Set([event.resource, ...event.parents])];
}

/** Whether a webhook should receive an event. */
export function webhookWants(webhook: Webhook, event: Pick<DeliveredEvent, 'type'>): boolean {
  return webhook.status === 'active' && anyTypeMatches(webhook.types, event.type);
}

export interface PlannedDelivery {
  readonly webhook: Webhook;
  readonly events: readonly DeliveredEvent[];
}

/** The body a subscriber receives. */
export function deliveryBody(webhookId: string, events: readonly unknown[]): string {
  return JSON.stringify({ webhook: webhookId, events });
}

const ENVELOPE_BYTES = Buffer.byteLength(deliveryBody('wh_0000000000000000000', []));

/**
 * Groups events into deliveries. `webhooksOn(resource)` lists the webhooks
 * subscribed to one resource. Each webhook receives an event once, even when it is
 * subscribed to several of the event's resources.
 */
export function planDeliveries(events: readonly DeliveredEvent[], webhooksOn: (resource: string) => readonly Webhook[]): PlannedDelivery[] {
  const perWebhook = new Map<string, { webhook: Webhook; events: DeliveredEvent[] }>();
  for (const event of events) {
    const seen = new Set<string>();
    for (const resource of subscribedResources(event)) {
      for (const webhook of webhooksOn(resource)) {
        if (seen.has(webhook.id) || !webhookWants(webhook, event)) continue;
        seen.add(webhook.id);
        const entry = perWebhook.get(webhook.id) ?? { webhook, events: [] };
        entry.events.push(event);
        perWebhook.set(webhook.id, entry);
      }
    }
  }
  const planned: PlannedDelivery[] = [];
  for (const { webhook, events: list } of perWebhook.values()) {
    let chunk: DeliveredEvent[] = [];
    let bytes = ENVELOPE_BYTES;
    for (const event of list) {
      const size = Buffer.byteLength(JSON.stringify(event)) + 1;
      if (chunk.length > 0 && (chunk.length >= MAX_EVENTS_PER_DELIVERY || bytes + size > MAX_DELIVERY_BYTES)) {
        planned.push({ webhook, events: chunk });
        chunk = [];
        bytes = ENVELOPE_BYTES;
      }
      chunk.push(event);
      bytes += size;
    }
    if (chunk.length > 0) planned.push({ webhook, events: chunk });
  }
  return planned;
}

/** The signed `webhook.ping` sent to verify a URL (data {}) or to probe a quarantined endpoint (data {probe: true}). */
export function pingEvent(id: string, resource: string, now: number, data: Record<string, unknown> = {}): DeliveredEvent {
  return { id, seq: 0, resource, parents: [], type: 'webhook.ping', data, created_at: new Date(now).toISOString() };
}

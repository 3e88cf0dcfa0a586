/**
 * Held deliveries of a quarantined or disabled endpoint, in release order (per
 * resource, by seq), kept in the control table under their webhook, with the retention
 * period as TTL (reads check expiry too). What overflowed the held cap is counted
 * apart (gap-counts.ts).
 */

import { DeleteCommand, QueryCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { eventCount } from '../core/deliveries.ts';
import type { DeliveryMessage } from '../core/model.ts';
import { CONTROL_PK } from '../definitions/tables.ts';
import { sentAgain } from './aws.ts';
import { applied, names } from './dynamo.ts';
import { pad, WebhookItems } from './webhook-items.ts';

export interface HeldDelivery {
  readonly sk: string;
  readonly message: DeliveryMessage;
}

// A partition the delivery function's role may reach (TABLE_ACCESS.delivery).
const heldPk = (webhookId: string) => `${CONTROL_PK.held}${webhookId}`;

/** The seq of a delivery's first event that has one (a `sluice.gap` marker has none). */
function firstSeq(message: DeliveryMessage): number | undefined {
  return message.events.find((event) => 'seq' in event)?.seq;
}

/** A held item as a release reads it: its place in the release order and its delivery. */
function heldDelivery(item: Record<string, unknown>): HeldDelivery {
  return { sk: String(item.sk), message: JSON.parse(String(item.message)) as DeliveryMessage };
}

export class HeldDeliveries extends WebhookItems {
  /**
   * Holds a delivery; the key orders release per resource by seq. False when it
   * was already held (SQS delivers at least once): the caller must not count it twice.
   */
  async hold(message: DeliveryMessage, now: number): Promise<boolean> {
    return (await this.holdAt(message, now)) !== undefined;
  }

  /** `hold`, answering where the delivery is held (its key, for `remove`), or undefined when it was already held. */
  async holdAt(message: DeliveryMessage, now: number): Promise<string | undefined> {
    const first = message.events[0];
    const resource = first?.resource ?? '';
    const sk = await this.#heldSk(message, resource);
    const stored = await this.putOnce({
      TableName: this.table,
      Item: { pk: heldPk(message.webhookId), sk, message: JSON.stringify(message), ...this.expiry(now) },
      ConditionExpression: 'attribute_not_exists(#pk)',
      ExpressionAttributeNames: names('pk'),
    });
    return stored ? sk : undefined;
  }

  /**
   * Where a held delivery goes in its resource's release order: at the seq of its first
   * event. A delivery of `sluice.gap` markers alone has no seq; it goes after whatever
   * its resource holds now, as it came: keyed at seq 0 it would be released before
   * events held earlier, and a subscriber that fetches the resource's state on the
   * marker would then be handed older events after it. ('~' sorts after the delivery
   * ids of events at the same seq; a hold SQS delivers again finds the same key, unless
   * more was held meanwhile, and then sends the marker twice, under the same ids.)
   */
  async #heldSk(message: DeliveryMessage, resource: string): Promise<string> {
    const seq = firstSeq(message);
    if (seq !== undefined) return `${resource}#${pad(seq)}#${message.deliveryId}`;
    const prefix = `${resource}#`;
    const result = await this.client.send(
      new QueryCommand({
        TableName: this.table,
        KeyConditionExpression: '#pk = :pk AND begins_with(#sk, :prefix)',
        ExpressionAttributeNames: names('pk', 'sk'),
        ExpressionAttributeValues: { ':pk': heldPk(message.webhookId), ':prefix': prefix },
        ScanIndexForward: false,
        Limit: 1,
        ConsistentRead: true,
        ProjectionExpression: '#sk',
      }),
    );
    const last = result.Items?.[0]?.sk;
    const at = last === undefined ? pad(0) : String(last).slice(prefix.length).split('#')[0];
    return `${prefix}${at}#~${message.deliveryId}`;
  }

  /**
   * The first `limit` held items in release order (fewer when they pass DynamoDB's 1 MB
   * page): the live ones, and apart those past the retention period (TTL deletes late),
   * which the caller removes and counts; `more` when items past the page are held.
   */
  async page(webhookId: string, limit: number, now: number): Promise<{ live: HeldDelivery[]; expired: HeldDelivery[]; more: boolean }> {
    const result = await this.client.send(
      new QueryCommand({
        TableName: this.table,
        KeyConditionExpression: '#pk = :pk',
        ExpressionAttributeNames: names('pk'),
        ExpressionAttributeValues: { ':pk': heldPk(webhookId) },
        ConsistentRead: true,
        Limit: limit,
      }),
    );
    const page = { live: [] as HeldDelivery[], expired: [] as HeldDelivery[], more: result.LastEvaluatedKey !== undefined };
    for (const item of result.Items ?? []) {
      const held = heldDelivery(item);
      (Number(item.expires_at_ms ?? Number.POSITIVE_INFINITY) > now ? page.live : page.expired).push(held);
    }
    return page;
  }

  /**
   * Held items past the retention period that TTL has not deleted yet, in release order,
   * read page by page while `more()` says so (a full cap of large deliveries is more than
   * one invocation should read).
   */
  async expired(webhookId: string, now: number, more: () => boolean): Promise<HeldDelivery[]> {
    const expired: HeldDelivery[] = [];
    const pages = this.pages(
      {
        KeyConditionExpression: '#pk = :pk',
        FilterExpression: '#expires_at_ms <= :now',
        ExpressionAttributeNames: names('pk', 'expires_at_ms'),
        ExpressionAttributeValues: { ':pk': heldPk(webhookId), ':now': now },
        ConsistentRead: true,
      },
      more,
    );
    for await (const page of pages) {
      for (const item of page.Items ?? []) expired.push(heldDelivery(item));
    }
    return expired;
  }

  /** Held items in the webhook's partition, expired ones too (TTL may not have deleted them yet). */
  async count(webhookId: string): Promise<number> {
    let count = 0;
    const pages = this.pages({
      KeyConditionExpression: '#pk = :pk',
      ExpressionAttributeNames: names('pk'),
      ExpressionAttributeValues: { ':pk': heldPk(webhookId) },
      ConsistentRead: true,
      Select: 'COUNT',
    });
    for await (const page of pages) count += page.Count ?? 0;
    return count;
  }

  /** Keeps a held delivery held, as its next attempt (a release of it failed); false when it is gone. */
  async holdAgain(webhookId: string, sk: string, message: DeliveryMessage): Promise<boolean> {
    return applied(
      this.client.send(
        new UpdateCommand({
          TableName: this.table,
          Key: { pk: heldPk(webhookId), sk },
          UpdateExpression: 'SET #message = :message',
          ConditionExpression: 'attribute_exists(#pk)',
          ExpressionAttributeNames: names('message', 'pk'),
          ExpressionAttributeValues: { ':message': JSON.stringify(message) },
        }),
      ),
    );
  }

  /**
   * Removes a held item; false when it was already gone (a release that ran twice). A
   * removal the SDK sent again finds nothing to return when its first try applied and
   * lost its answer: that try's removal is this call's, and taken for another step's it
   * would leave the delivery in the held count (and a dead letter uncounted), which the
   * release then took for one lost to retention, with a gap marker for a loss that never
   * was. (Two steps of one release removing the same item at once, one of them sent
   * again, may both count it: the count then runs one below what is held.)
   */
  async remove(webhookId: string, sk: string): Promise<boolean> {
    const result = await this.client.send(
      new DeleteCommand({ TableName: this.table, Key: { pk: heldPk(webhookId), sk }, ReturnValues: 'ALL_OLD' }),
    );
    return result.Attributes !== undefined || sentAgain(result);
  }

  /**
   * Removes the webhook's held deliveries, every page of them (see `removeAll`) while
   * `more` says so, for a deleted webhook (see `forgetWebhook`, app/webhooks.ts): answers
   * how many held deliveries and events went with them, and whether any page was left.
   * Events only, as a held `sluice.gap` marker stands for events counted when they were
   * dropped; deliveries all, markers too, as the webhook's held count counts them.
   */
  async forget(webhookId: string, more?: () => boolean): Promise<{ events: number; deliveries: number; complete: boolean }> {
    let events = 0;
    let deliveries = 0;
    const complete = await this.removeAll(
      heldPk(webhookId),
      (items) => {
        deliveries += items.length;
        for (const item of items) events += eventCount((JSON.parse(String(item.message)) as DeliveryMessage).events);
      },
      more,
    );
    return { events, deliveries, complete };
  }
}

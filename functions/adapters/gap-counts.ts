/**
 * Per-resource counts of the events of a webhook that were neither delivered nor held
 * (what overflowed the held cap, or a drop switch discarded), each owed a `sluice.gap`
 * marker, kept in the control table under the webhook.
 */

import { DeleteCommand, GetCommand, PutCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import type { OverflowCount } from '../core/deliveries.ts';
import type { GapMarker } from '../core/model.ts';
import { CONTROL_PK } from '../definitions/tables.ts';
import { applied, epochSeconds, isConditionFailure, names } from './dynamo.ts';
import { WebhookItems } from './webhook-items.ts';

// Partitions the delivery function's role may reach (TABLE_ACCESS.delivery).
const overflowPk = (webhookId: string) => `${CONTROL_PK.overflow}${webhookId}`;
// Apart from the counts, which a release reads whole: which deliveries were counted (`countOnce`).
const countedPk = (webhookId: string) => `${CONTROL_PK.overflow}${webhookId}#counted`;

/**
 * The gap markers one release step sends at most: a webhook can owe one per resource
 * (tens of thousands, under a long drop or a held overflow), more than one step could
 * queue or one DynamoDB page (1 MB) would hold.
 */
export const OWED_GAPS_PER_STEP = 100;

/**
 * How long an overflow count outlives its last event: a drop or a disable may last
 * longer than the retention period, and its marker is owed at its end.
 */
const OVERFLOW_KEEP_MS = 366 * 86_400_000;

export class GapCounts extends WebhookItems {
  /**
   * Counts events that were not delivered and not held (past the held cap, or
   * discarded by a drop switch), per reason and resource, for one gap marker each.
   * A count is owed until its marker goes, which is when the switch is lifted or the
   * webhook released, however long after: it is kept a year from its last event
   * (OVERFLOW_KEEP_MS), not the retention period, and goes when its marker is sent (or
   * its webhook is deleted).
   */
  async count(
    webhookId: string,
    resource: string,
    dropped: number,
    now: number,
    reason: GapMarker['data']['reason'] = 'held_overflow',
  ): Promise<void> {
    await this.client.send(
      new UpdateCommand({
        TableName: this.table,
        Key: { pk: overflowPk(webhookId), sk: `${reason}#${resource}` },
        UpdateExpression: 'ADD #dropped :n SET #expires_at = :exp, #since = if_not_exists(#since, :now), #last_at = :now',
        ExpressionAttributeNames: names('dropped', 'expires_at', 'since', 'last_at'),
        ExpressionAttributeValues: { ':n': dropped, ':exp': epochSeconds(now + OVERFLOW_KEEP_MS), ':now': now },
      }),
    );
  }

  /**
   * `count` for one delivery's events of one resource and reason, once however
   * often SQS hands the delivery back: a record that fails after its count (a later
   * resource's count, or the recheck's send) is delivered again, and counting it again
   * would make the gap marker over-report. The count goes first and then a receipt of
   * it, which a delivery handed back finds: one that dies between the two counts twice
   * (a marker that overstates, never a loss told to no one), as the count itself does
   * when the SDK sends it again after an answer was lost. False when it was counted before.
   */
  async countOnce(
    deliveryId: string,
    webhookId: string,
    resource: string,
    dropped: number,
    now: number,
    reason: GapMarker['data']['reason'],
  ): Promise<boolean> {
    const key = { pk: countedPk(webhookId), sk: `${deliveryId}#${reason}#${resource}` };
    const receipt = await this.client.send(new GetCommand({ TableName: this.table, Key: key, ConsistentRead: true }));
    if (receipt.Item) return false;
    await this.count(webhookId, resource, dropped, now, reason);
    // Kept as long as SQS may hand the delivery back, well within the retention period.
    await this.client.send(new PutCommand({ TableName: this.table, Item: { ...key, dropped, ...this.expiry(now) } }));
    return true;
  }

  /**
   * The webhook's overflow counts that owe a gap marker (events counted that no sent
   * marker stands for), in key order: the first `limit` of them, or all if fewer (a
   * release sends their markers a step at a time, and steps on while it got `limit`).
   */
  async owed(webhookId: string, now: number, limit = OWED_GAPS_PER_STEP): Promise<OverflowCount[]> {
    const owed: OverflowCount[] = [];
    const pages = this.pages(
      {
        KeyConditionExpression: '#pk = :pk',
        ExpressionAttributeNames: names('pk'),
        ExpressionAttributeValues: { ':pk': overflowPk(webhookId) },
        ConsistentRead: true,
        Limit: limit,
      },
      () => owed.length < limit,
    );
    for await (const page of pages) owed.push(...(await this.#owed(page.Items ?? [], now)));
    return owed.slice(0, limit);
  }

  async #owed(found: readonly Record<string, unknown>[], now: number): Promise<OverflowCount[]> {
    const items = await Promise.all(found.map((item) => (item.since === undefined ? this.#stampSince(item, now) : item)));
    return items
      .flatMap((item) => (item ? [item] : []))
      .map((item) => {
        const key = String(item.sk);
        const at = key.indexOf('#');
        return {
          key,
          reason: key.slice(0, at) as GapMarker['data']['reason'],
          resource: key.slice(at + 1),
          dropped: Number(item.dropped ?? 0),
          sent: Number(item.sent ?? 0),
          since: Number(item.since),
          // A count kept by an earlier version has no time of its last event: its stamp stands in.
          lastAt: Number(item.last_at ?? item.since),
        };
      })
      .filter((count) => count.dropped > count.sent);
  }

  /**
   * A count kept by an earlier version has no `since`, which tells one count from another
   * begun after it was cleared: it is given one when first read, the same for every reader
   * (if_not_exists), and read back. Undefined when the count is gone meanwhile.
   */
  async #stampSince(item: Record<string, unknown>, now: number): Promise<Record<string, unknown> | undefined> {
    try {
      const result = await this.client.send(
        new UpdateCommand({
          TableName: this.table,
          Key: { pk: item.pk, sk: item.sk },
          UpdateExpression: 'SET #since = if_not_exists(#since, :now)',
          // Never on a count that is gone (the update would create it).
          ConditionExpression: 'attribute_exists(#pk)',
          ExpressionAttributeNames: names('since', 'pk'),
          ExpressionAttributeValues: { ':now': now },
          ReturnValues: 'ALL_NEW',
        }),
      );
      return result.Attributes;
    } catch (error) {
      if (isConditionFailure(error)) return undefined;
      throw error;
    }
  }

  /**
   * The marker owed for a count was sent: the count is cleared if it is still as read,
   * and true is answered. A count that grew meanwhile keeps the events counted since:
   * it notes what the sent marker stands for, and answers false (a marker is owed for
   * the rest).
   */
  async markerSent(webhookId: string, count: OverflowCount): Promise<boolean> {
    const key = { pk: overflowPk(webhookId), sk: count.key };
    // Both writes: the same count (since) as read, as one begun again after a clear is another's.
    const values = { ':dropped': count.dropped, ':since': count.since };
    const cleared = await applied(
      this.client.send(
        new DeleteCommand({
          TableName: this.table,
          Key: key,
          // Only while unchanged: an event counted after the read must not go without its marker.
          ConditionExpression: '#dropped = :dropped AND #since = :since',
          ExpressionAttributeNames: names('dropped', 'since'),
          ExpressionAttributeValues: values,
        }),
      ),
    );
    if (cleared) return true;
    // Grown: what was sent is noted, never moved back (a step that ran twice may have noted more),
    // and never on a count that is gone (the update would create it).
    await applied(
      this.client.send(
        new UpdateCommand({
          TableName: this.table,
          Key: key,
          UpdateExpression: 'SET #sent = :dropped',
          ConditionExpression: 'attribute_exists(#pk) AND #since = :since AND (attribute_not_exists(#sent) OR #sent < :dropped)',
          ExpressionAttributeNames: names('pk', 'since', 'sent'),
          ExpressionAttributeValues: values,
        }),
      ),
    );
    return false;
  }

  /**
   * Removes the webhook's counts, every page of them (see `removeAll`) while `more` says
   * so, for a deleted webhook (see `forgetWebhook`, app/webhooks.ts): whether every page went.
   */
  async forget(webhookId: string, more?: () => boolean): Promise<boolean> {
    return this.removeAll(overflowPk(webhookId), undefined, more);
  }
}

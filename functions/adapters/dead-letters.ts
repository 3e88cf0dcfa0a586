/**
 * Dead letters: deliveries past the retry budget, kept in the control table under their
 * webhook, with the retention period as TTL (reads check expiry too).
 */

import { randomUUID } from 'node:crypto';
import { DeleteCommand, QueryCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import type { DeliveryMessage } from '../core/model.ts';
import { CONTROL_PK } from '../definitions/tables.ts';
import { applied, appliedOwn, epochSeconds, names } from './dynamo.ts';
import { pad, WebhookItems } from './webhook-items.ts';

/** A dead letter as a page gives it: `replayedAt` when a replay's delivery wrote it (see `DeadLetters.add`). */
export interface DeadLetter {
  readonly sk: string;
  readonly reason: string;
  readonly message: DeliveryMessage;
  readonly replayedAt: number | undefined;
}

/**
 * The most bytes of letters past the retention period one page reads past before it
 * ends (at the end of the query page that passes it): four of DynamoDB's 1 MB query
 * pages, some 1,000 read units and a few hundred milliseconds.
 */
export const DEAD_LETTER_EXPIRED_BYTES = 4 * 1024 * 1024;
/** The most items a query of a page reads past its letters, once it has passed expired ones (DynamoDB's 1 MB bounds it too). */
const EXPIRED_READ_LIMIT = 1_000;
/** Expired letters a replay removes at once. */
const REMOVE_AT_ONCE = 25;

// A partition the delivery function's role may reach (TABLE_ACCESS.delivery).
const deadPk = (webhookId: string) => `${CONTROL_PK.dead}${webhookId}`;
// Apart from the letters' partition, which a page reads whole.
const replayHoldKey = (webhookId: string) => ({ pk: `${deadPk(webhookId)}#replaying`, sk: 'replaying' });

/**
 * The longest one replay holds a webhook's dead letters (`holdForReplay`): past the API's
 * 29 s, in which it sends and removes them, so that one that died lets the next in after.
 */
export const REPLAY_HOLD_MS = 60_000;

/** When a delivery's oldest event was accepted (epoch ms; 0 when none says). */
function acceptedAt(message: DeliveryMessage): number {
  const times = message.events.map((e) => Date.parse(e.created_at)).filter(Number.isFinite);
  return times.length > 0 ? Math.min(...times) : 0;
}

export class DeadLetters extends WebhookItems {
  /**
   * Keeps a delivery past its last attempt as a dead letter; false when it already was
   * one. Its key is the delivery's (the time its oldest event was accepted, then its
   * id), not the time of the write, so that a step run again after a crash (SQS
   * delivers it again) finds the dead letter it wrote instead of writing a second. A
   * delivery a dead-letter replay sent again replaces the letter it was sent from,
   * which that replay may not have removed yet (see `remove`), and is kept
   * with its replay's time (`replayed_at`), so that the replay does not remove it.
   */
  async add(message: DeliveryMessage, reason: string, now: number): Promise<boolean> {
    const replayedAt = message.replayedAt;
    return this.putOnce({
      TableName: this.table,
      Item: {
        pk: deadPk(message.webhookId),
        sk: `${pad(acceptedAt(message))}#${message.deliveryId}`,
        reason,
        message: JSON.stringify(message),
        ...(replayedAt !== undefined && { replayed_at: replayedAt }),
        ...this.expiry(now),
      },
      ...(replayedAt === undefined
        ? { ConditionExpression: 'attribute_not_exists(#pk)', ExpressionAttributeNames: names('pk') }
        : {
            // Written by this delivery before (a step run again): not again.
            ConditionExpression: 'attribute_not_exists(#pk) OR attribute_not_exists(#replayed_at) OR #replayed_at < :replayed_at',
            ExpressionAttributeNames: names('pk', 'replayed_at'),
            ExpressionAttributeValues: { ':replayed_at': replayedAt },
          }),
    });
  }

  /**
   * A page of a webhook's live dead letters, in the order their oldest events were
   * accepted, after the one keyed `afterSk` (a page's `lastSk`): at most `limit`, and no
   * more once `bytes` of their messages are read (the first is always taken). `more`
   * tells whether any follow.
   *
   * Letters past the retention period that TTL has not deleted yet (it deletes days
   * late) are passed over, and their keys given apart in `expired` (a replay removes them): since a
   * letter's key is its events' accepted time, not its write's, and a replay's delivery
   * that fails again writes its letter anew under its old key, no key range leaves them
   * out. Once the page has passed `expiredBytes` of them (DEAD_LETTER_EXPIRED_BYTES) it
   * ends there, short or empty, with `more` and a `lastSk` past them: a webhook whose
   * letters of months ago TTL still keeps is read a bounded stretch a call, where a
   * page read through all of them in one call, past the API's 29 s.
   */
  async page(
    webhookId: string,
    now: number,
    limit: number,
    options: { afterSk?: string; bytes?: number; expiredBytes?: number } = {},
  ): Promise<{ letters: DeadLetter[]; expired: string[]; more: boolean; lastSk: string | undefined }> {
    const letters: DeadLetter[] = [];
    const expired: string[] = [];
    const expiredBudget = options.expiredBytes ?? DEAD_LETTER_EXPIRED_BYTES;
    let bytes = 0;
    let expiredBytes = 0;
    let more = false;
    let lastSk: string | undefined;
    // Within `bytes` with the next letter in it (the first one always: a letter is far smaller than any limit given).
    const full = (size: number) =>
      letters.length >= limit || (options.bytes !== undefined && letters.length > 0 && bytes + size > options.bytes);
    let startKey: Record<string, unknown> | undefined;
    do {
      const result = await this.client.send(
        new QueryCommand({
          TableName: this.table,
          KeyConditionExpression: options.afterSk === undefined ? '#pk = :pk' : '#pk = :pk AND #sk > :after',
          ExpressionAttributeNames: names('pk', ...(options.afterSk === undefined ? [] : ['sk'])),
          ExpressionAttributeValues: {
            ':pk': deadPk(webhookId),
            ...(options.afterSk !== undefined && { ':after': options.afterSk }),
          },
          // One more than the page holds (to tell `more`), and more once expired letters were passed.
          Limit: limit + 1 + Math.min(expired.length, EXPIRED_READ_LIMIT),
          // A replay that follows `has_more` at once must not read again letters the one
          // before it sent and removed.
          ConsistentRead: true,
          ...(startKey && { ExclusiveStartKey: startKey }),
        }),
      );
      for (const item of result.Items ?? []) {
        const message = String(item.message);
        const size = Buffer.byteLength(message);
        if (Number(item.expires_at_ms) <= now) {
          expired.push(String(item.sk));
          expiredBytes += size;
          lastSk = String(item.sk);
          continue;
        }
        if (full(size)) {
          more = true;
          break;
        }
        bytes += size;
        const replayedAt = item.replayed_at === undefined ? undefined : Number(item.replayed_at);
        letters.push({ sk: String(item.sk), reason: String(item.reason), message: JSON.parse(message), replayedAt });
        lastSk = String(item.sk);
      }
      startKey = result.LastEvaluatedKey;
      // Past its budget of expired letters the page ends where it is (a full query page read).
      if (!more && startKey !== undefined && expiredBytes >= expiredBudget) more = true;
    } while (!more && startKey !== undefined);
    return { letters, expired, more, lastSk };
  }

  /**
   * Removes dead letters a page passed over as past the retention period (what TTL
   * would, late): only while still expired, not one a replay's delivery that failed
   * again wrote anew under the same key meanwhile.
   */
  async removeExpired(webhookId: string, keys: readonly string[], now: number): Promise<void> {
    for (let i = 0; i < keys.length; i += REMOVE_AT_ONCE) {
      await Promise.all(
        keys.slice(i, i + REMOVE_AT_ONCE).map((sk) =>
          applied(
            this.client.send(
              new DeleteCommand({
                TableName: this.table,
                Key: { pk: deadPk(webhookId), sk },
                ConditionExpression: '#expires_at_ms <= :now',
                ExpressionAttributeNames: names('expires_at_ms'),
                ExpressionAttributeValues: { ':now': now },
              }),
            ),
          ),
        ),
      );
    }
  }

  /**
   * Holds the webhook's dead letters for one replay, until `releaseReplayHold` or for
   * REPLAY_HOLD_MS: its token, or undefined while another replay holds them. A letter
   * stays until the replay that read it has sent and removed it, so two replays at once
   * read and sent the same letters. (A hold whose answer was lost, refused on the SDK's
   * second try by its own first, is still this caller's.)
   */
  async holdForReplay(webhookId: string, now: number): Promise<string | undefined> {
    const token = randomUUID();
    const key = replayHoldKey(webhookId);
    const held = await appliedOwn(
      this.client.send(
        new UpdateCommand({
          TableName: this.table,
          Key: key,
          UpdateExpression: 'SET #token = :token, #until = :until, #expires_at = :expires_at',
          ConditionExpression: 'attribute_not_exists(#until) OR #until < :now',
          ExpressionAttributeNames: names('token', 'until', 'expires_at'),
          // TTL removes a hold its replay did not release (one that died), a day on.
          ExpressionAttributeValues: {
            ':token': token,
            ':until': now + REPLAY_HOLD_MS,
            ':now': now,
            ':expires_at': epochSeconds(now + REPLAY_HOLD_MS + 86_400_000),
          },
        }),
      ),
      { client: this.client, table: this.table, key, attribute: 'token', token },
    );
    return held ? token : undefined;
  }

  /** Ends the hold `token` names (not another replay's, should this one have outlived its hold). */
  async releaseReplayHold(webhookId: string, token: string): Promise<void> {
    await applied(
      this.client.send(
        new DeleteCommand({
          TableName: this.table,
          Key: replayHoldKey(webhookId),
          ConditionExpression: '#token = :token',
          ExpressionAttributeNames: names('token'),
          ExpressionAttributeValues: { ':token': token },
        }),
      ),
    );
  }

  /**
   * Removes a dead letter (keyed `sk`, as `page` gives it) once it was sent
   * again: only the one read (`replayedAt` as the page gave it), not one its delivery,
   * sent again and failed again meanwhile, wrote in its place.
   */
  async remove(webhookId: string, sk: string, replayedAt: number | undefined): Promise<void> {
    await applied(
      this.client.send(
        new DeleteCommand({
          TableName: this.table,
          Key: { pk: deadPk(webhookId), sk },
          ConditionExpression: replayedAt === undefined ? 'attribute_not_exists(#replayed_at)' : '#replayed_at = :replayed_at',
          ExpressionAttributeNames: names('replayed_at'),
          ...(replayedAt !== undefined && { ExpressionAttributeValues: { ':replayed_at': replayedAt } }),
        }),
      ),
    );
  }
}

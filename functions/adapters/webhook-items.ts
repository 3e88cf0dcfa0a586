/**
 * What the delivery stage keeps in the control table, each under its webhook, with a
 * TTL (the retention period for most; a year for the overflow counts, which outlast a
 * long drop; a send budget's window for its count), one store a kind:
 *
 * - attempts and the delivery log (delivery-log.ts);
 * - held deliveries (held-deliveries.ts), and the counts of what overflowed them, each
 *   owed a gap marker (gap-counts.ts);
 * - dead letters (dead-letters.ts);
 * - each endpoint's pace (pace-store.ts), and per-window send budgets (send-budgets.ts).
 *
 * Here is what they share: the stores' base (`WebhookItems`), the padded numbers of
 * their sort keys, and how the asks of one invocation share one write (`gathered`).
 */

import { randomUUID } from 'node:crypto';
import {
  type DynamoDBDocumentClient,
  PutCommand,
  type PutCommandInput,
  type QueryCommandInput,
  type QueryCommandOutput,
} from '@aws-sdk/lib-dynamodb';
import { appliedOwn, batchWrite, epochSeconds, names, queryPages } from './dynamo.ts';

export const pad = (n: number, width = 15) => String(n).padStart(width, '0');

export interface Waiter<T> {
  readonly resolve: (answer: T) => void;
  readonly reject: (error: unknown) => void;
}

/** How long a take waits for the other records of its invocation to ask too. */
const TAKE_LINGER_MS = 3;

/**
 * Asks made under one key within TAKE_LINGER_MS (the records of one invocation) share
 * one `answer` for all of them, which answers each in the order they asked.
 */
export function gathered<T>(groups: Map<string, Array<Waiter<T>>>, key: string, answer: (count: number) => Promise<T[]>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let group = groups.get(key);
    if (!group) {
      const waiters: Array<Waiter<T>> = [];
      group = waiters;
      groups.set(key, waiters);
      setTimeout(() => {
        groups.delete(key);
        answer(waiters.length).then(
          (answers) => {
            for (const [i, w] of waiters.entries()) w.resolve(answers[i] as T);
          },
          (error: unknown) => {
            for (const w of waiters) w.reject(error);
          },
        );
      }, TAKE_LINGER_MS);
    }
    group.push({ resolve, reject });
  });
}

/**
 * A store of one kind of item of the control table that the delivery stage keeps per
 * webhook: its client, the table, and the helpers its kind shares with the others (an
 * expiry a retention period away among them).
 */
export abstract class WebhookItems {
  protected readonly client: DynamoDBDocumentClient;
  protected readonly table: string;
  readonly #retentionMs: number;

  constructor(options: { client: DynamoDBDocumentClient; tableName: string; retentionDays: number }) {
    this.client = options.client;
    this.table = options.tableName;
    this.#retentionMs = options.retentionDays * 86_400_000;
  }

  protected expiry(now: number) {
    return { expires_at: epochSeconds(now + this.#retentionMs), expires_at_ms: now + this.#retentionMs };
  }

  /**
   * The earliest time (epoch ms) an item keyed by the time it was written (and given its
   * expiry then) can have been written and not have expired at `now`. A read of such
   * items starts its key range there: TTL deletes days late, and a range from further
   * back reads, page by 1 MB page, what the filter on expiry then throws away.
   */
  protected liveSince(now: number): number {
    return Math.max(0, now - this.#retentionMs);
  }

  /** The pages of a query of this table (see `queryPages`). */
  protected pages(
    input: Omit<QueryCommandInput, 'TableName' | 'ExclusiveStartKey'>,
    more?: () => boolean,
  ): AsyncGenerator<QueryCommandOutput> {
    return queryPages(this.client, { ...input, TableName: this.table }, { ...(more && { more }) });
  }

  /**
   * A put whose condition refuses an item written before (a delivery held, or
   * dead-lettered, by an earlier receive of its message): whether this call wrote it.
   * The item carries a token of this call's, so that a try the SDK sent again after the
   * first applied and lost its answer, refused by the first's item, is told from a
   * refusal by an earlier receive's: taken for one, the hold would give its place in the
   * held count back (the delivery held, uncounted: a release chain could end with it
   * still held, and nothing would send it), and the dead letter would be counted by no
   * one (the `DeadLetters` metric is what pages on-call).
   */
  protected async putOnce(input: Omit<PutCommandInput, 'Item'> & { Item: Record<string, unknown> }): Promise<boolean> {
    const token = randomUUID();
    return appliedOwn(this.client.send(new PutCommand({ ...input, Item: { ...input.Item, written_by: token } })), {
      client: this.client,
      table: this.table,
      key: { pk: input.Item.pk, sk: input.Item.sk },
      attribute: 'written_by',
      token,
    });
  }

  /**
   * Removes every item of a partition (a deleted webhook's), every page of them, throwing
   * if DynamoDB still left some unprocessed after a few tries (TTL removes those, late).
   * `seen` is shown each page's items before they go. With `more`, asked after each page,
   * it stops when that says so; answers whether it removed every page.
   */
  protected async removeAll(pk: string, seen?: (items: Record<string, unknown>[]) => void, more?: () => boolean): Promise<boolean> {
    let done = true;
    const pages = this.pages(
      {
        KeyConditionExpression: '#pk = :pk',
        ExpressionAttributeNames: names('pk'),
        ExpressionAttributeValues: { ':pk': pk },
        // A delivery held (or counted) in the second before the deletion is removed too:
        // a replica that had not seen it yet would leave it a week (a count, a year).
        ConsistentRead: true,
      },
      more &&
        (() => {
          done = more();
          return done;
        }),
    );
    for await (const page of pages) {
      const items = page.Items ?? [];
      seen?.(items);
      // What DynamoDB leaves unprocessed (a throttled partition) is sent again: left, a
      // deleted webhook's held events would stay a week, its overflow counts a year.
      await batchWrite(
        this.client,
        this.table,
        items.map((item) => ({ DeleteRequest: { Key: { pk: item.pk, sk: item.sk } } })),
      );
    }
    return done;
  }
}

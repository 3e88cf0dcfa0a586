/**
 * The sandbox's event source mapping, modelled on Lambda's: a few pollers
 * long-poll the queue and hand each batch to an invocation of the handler (the
 * event Lambda would send: SQS records with their attributes), up to the
 * function's maximum concurrency. A poller never waits for an invocation, so a
 * slow invocation holds its own concurrency and nothing else, and no longer than
 * the function's timeout. When the handler returns, what it did not report failed
 * is deleted; failures (a handler that throws or times out included) come back
 * after the visibility timeout, as with Lambda.
 */
import { randomUUID } from 'node:crypto';
import {
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageBatchCommand,
  type Message,
  ReceiveMessageCommand,
  type ReceiveMessageCommandOutput,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import type { Context, SQSEvent, SQSRecord } from 'aws-lambda';
import type { LoggerPort } from '../functions/core/telemetry.ts';
import type { FunctionName } from '../functions/definitions/alarms.ts';
import { FUNCTION_MEMORY_MB } from '../functions/definitions/environment.ts';
import type { SqsHandler } from '../functions/distributor/process.ts';
import type { SandboxQueue } from './emulators.ts';
import type { InMemoryMetrics } from './metrics.ts';
import { endsAt, TimedOut } from './threads.ts';

export interface PollerOptions {
  readonly client: SQSClient;
  readonly queue: SandboxQueue;
  readonly handler: SqsHandler;
  readonly functionName: string;
  readonly logger: LoggerPort;
  /** Most invocations at once; defaults to the definition's maxConcurrency. */
  readonly concurrency?: number;
  /** Receive loops (Lambda runs several pollers per mapping). @default 2 */
  readonly pollers?: number;
  /** Where to record what AWS would measure: queue age and function errors. */
  readonly metrics?: InMemoryMetrics;
  /** The function's name in the alarm definitions. */
  readonly fn?: FunctionName;
  /** Told the duration of every invocation. */
  readonly onInvocation?: (fn: string, durationMs: number) => void;
  /** Told every batch received, before its invocation starts. */
  readonly onReceive?: ReceiveObserver;
}

/** Receives after which SQS leaves a message not deleted out of ApproximateAgeOfOldestMessage (see Poller's #undeleted). */
export const POISON_RECEIVES = 3;

/** A batch as received: the queue (its logical name), and each message's body and time sent. */
export type ReceiveObserver = (queue: string, messages: ReadonlyArray<{ body: string; sentAt: number }>, receivedAt: number) => void;

function lambdaContext(functionName: string, timeoutSeconds: number): Context {
  const deadline = Date.now() + timeoutSeconds * 1000;
  return {
    callbackWaitsForEmptyEventLoop: false,
    functionName,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:us-east-1:000000000000:function:${functionName}`,
    memoryLimitInMB: String(FUNCTION_MEMORY_MB),
    awsRequestId: randomUUID(),
    logGroupName: `/aws/lambda/${functionName}`,
    logStreamName: 'sandbox',
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
    done: () => {},
    fail: () => {},
    succeed: () => {},
  };
}

/** How long a receive waits for messages, as Lambda's pollers do (the longest SQS allows). */
export const LONG_POLL_SECONDS = 20;

export class Poller {
  readonly #options: PollerOptions;
  #running = false;
  #loops: Promise<void>[] = [];
  readonly #stopping = new AbortController();
  readonly #invocations = new Set<Promise<void>>();
  /** Loops whose receive is under way: each holds a slot for the batch it may bring. */
  #receiving = 0;
  #waiting: Array<() => void> = [];
  /**
   * Messages received and not deleted, by id: in flight, or back in the queue after a
   * failed receive, waiting out the visibility timeout. SQS's ApproximateAgeOfOldestMessage
   * counts them (the oldest message not deleted), so the age measured here does too: a
   * doorbell every receive fails is minutes old between its receives, not an empty queue.
   * Except as AWS documents: a message received POISON_RECEIVES times and still not
   * deleted, a poison pill, goes to the back of the queue and out of the metric, which
   * then shows the next oldest; such a doorbell shows in DistributorRecordsFailed, and
   * distributor-backlog-age need not fire for it.
   * `goneAt`: when one received for the last time its redrive policy allows moves to the
   * dead-letter queue (it would be visible again then).
   */
  readonly #undeleted = new Map<string, { readonly sentAt: number; readonly receives: number; goneAt?: number }>();

  constructor(options: PollerOptions) {
    this.#options = options;
  }

  get #concurrency(): number {
    return this.#options.concurrency ?? this.#options.queue.definition.maxConcurrency;
  }

  start(): void {
    this.#running = true;
    this.#loops = Array.from({ length: this.#options.pollers ?? 2 }, () => this.#loop());
  }

  /**
   * Stops receiving, lets the invocations under way end, then ends the receives still
   * waiting. A receive is cut off only once nothing sends to the queue any more (stop
   * the pollers in pipeline order, after whatever sends to their queues): the emulator
   * hands a message that arrives to a waiting receive even when its caller has gone,
   * and the message would then stay invisible for the visibility timeout, minutes after
   * a restart. A receive that brings messages while stopping gives them back at once.
   */
  async stop(): Promise<void> {
    this.#running = false;
    this.#wake();
    while (this.#invocations.size > 0) await Promise.all(this.#invocations);
    this.#stopping.abort();
    await Promise.all(this.#loops);
  }

  /**
   * Waits until an invocation may start, and takes its slot for the receive that may
   * bring its batch (false when stopping): fewer than the concurrency are running or
   * receiving. The slot is taken in the same turn as the check, so two loops' batches
   * cannot both start when one slot was free, which the mapping's MaximumConcurrency
   * would not allow.
   */
  async #takeSlot(): Promise<boolean> {
    while (this.#running && this.#invocations.size + this.#receiving >= this.#concurrency) {
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    }
    if (!this.#running) return false;
    this.#receiving++;
    return true;
  }

  #wake(): void {
    const waiting = this.#waiting;
    this.#waiting = [];
    for (const resolve of waiting) resolve();
  }

  async #loop(): Promise<void> {
    const { client, queue, logger, functionName } = this.#options;
    while (this.#running) {
      try {
        if (!(await this.#takeSlot())) return;
        let received: ReceiveMessageCommandOutput;
        try {
          received = await client.send(
            new ReceiveMessageCommand({
              QueueUrl: queue.url,
              MaxNumberOfMessages: queue.definition.batchSize,
              WaitTimeSeconds: LONG_POLL_SECONDS,
              MessageSystemAttributeNames: ['All'],
            }),
            { abortSignal: this.#stopping.signal },
          );
        } finally {
          // The slot passes to the invocation started below, in this same turn, or is freed.
          this.#receiving--;
          this.#wake();
        }
        const messages = received.Messages ?? [];
        const now = Date.now();
        for (const m of messages) {
          const receives = Number(m.Attributes?.ApproximateReceiveCount ?? 1);
          this.#undeleted.set(m.MessageId as string, { sentAt: Number(m.Attributes?.SentTimestamp ?? now), receives });
        }
        this.recordAge(now);
        if (messages.length === 0) continue;
        if (!this.#running) {
          await this.#giveBack(messages);
          continue;
        }
        this.#options.onReceive?.(
          queue.definition.logicalName,
          messages.map((m) => ({ body: m.Body ?? '', sentAt: Number(m.Attributes?.SentTimestamp ?? now) })),
          now,
        );
        const invocation = this.#invoke(messages).finally(() => {
          this.#invocations.delete(invocation);
          this.#wake();
        });
        this.#invocations.add(invocation);
      } catch (error) {
        if (!this.#running) return;
        logger.error('Poller iteration failed', { function: functionName, error });
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
  }

  /**
   * Records the age of the oldest message this mapping has seen and not deleted (in
   * flight, or waiting to be received again), as CloudWatch measures the queue's: at each
   * receive, and when the sandbox's monitor asks (a receive can wait 20 s for nothing).
   */
  recordAge(now = Date.now()): void {
    let oldest = 0;
    for (const [id, message] of this.#undeleted) {
      if (message.goneAt !== undefined && message.goneAt <= now) this.#undeleted.delete(id);
      else if (message.receives < POISON_RECEIVES) oldest = Math.max(oldest, now - message.sentAt);
    }
    this.#options.metrics?.record(`queue:${this.#options.queue.definition.logicalName}:ApproximateAgeOfOldestMessage`, oldest / 1000);
  }

  /** Notes records SQS keeps after this receive (failed, or their invocation did): each comes back, or goes to the dead-letter queue. */
  #kept(records: readonly SQSRecord[]): void {
    const { definition } = this.#options.queue;
    for (const record of records) {
      const message = this.#undeleted.get(record.messageId);
      if (message && Number(record.attributes?.ApproximateReceiveCount ?? 1) >= definition.maxReceiveCount) {
        message.goneAt = Date.now() + definition.visibilityTimeoutSeconds * 1000;
      }
    }
  }

  /**
   * Makes messages received while stopping visible again within a second, for the next
   * start. Not at once (a timeout of 0): with a data directory the emulator (fauxqs 2.4)
   * fails that change in its store, after taking the message out of flight in memory
   * only, so the stored message stayed in flight and came back after the next start only
   * at its visibility timeout, minutes on (a bulk-lane flood's batches, received right up
   * to the stop). A timeout of one second is stored.
   */
  async #giveBack(messages: Message[]): Promise<void> {
    const { client, queue } = this.#options;
    await client.send(
      new ChangeMessageVisibilityBatchCommand({
        QueueUrl: queue.url,
        Entries: messages.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle as string, VisibilityTimeout: 1 })),
      }),
    );
  }

  /** One invocation: the handler, then the deletes of what it did not report failed. */
  async #invoke(messages: Message[]): Promise<void> {
    const { client, queue, handler, functionName, logger } = this.#options;
    const records: SQSRecord[] = messages.map((m) => ({
      messageId: m.MessageId as string,
      receiptHandle: m.ReceiptHandle as string,
      body: m.Body ?? '',
      attributes: m.Attributes as unknown as SQSRecord['attributes'],
      messageAttributes: {},
      md5OfBody: m.MD5OfBody ?? '',
      eventSource: 'aws:sqs',
      eventSourceARN: `arn:aws:sqs:us-east-1:000000000000:${queue.url.split('/').pop()}`,
      awsRegion: 'us-east-1',
    }));
    const event: SQSEvent = { Records: records };
    try {
      let response: Awaited<ReturnType<SqsHandler>>;
      const started = performance.now();
      const timeoutSeconds = queue.definition.consumerTimeoutSeconds;
      try {
        response = await endsAt(handler(event, lambdaContext(functionName, timeoutSeconds)), timeoutSeconds);
        this.#options.onInvocation?.(this.#options.fn ?? functionName, performance.now() - started);
      } catch (error) {
        // A failed invocation (or one past its timeout), as Lambda's Errors metric counts
        // it; SQS delivers the batch again after the visibility timeout. Lambda bills it
        // all the same, for as long as it ran: a timed-out one for its whole timeout (the
        // timer can fire a little early by this clock, when it was set late in a turn of
        // the event loop).
        const ran = performance.now() - started;
        const billed = error instanceof TimedOut ? Math.max(ran, timeoutSeconds * 1000) : ran;
        this.#options.onInvocation?.(this.#options.fn ?? functionName, billed);
        if (this.#options.fn) this.#options.metrics?.record(`function:${this.#options.fn}:Errors`, 1);
        this.#kept(records);
        throw error;
      }
      const failed = new Set(response.batchItemFailures.map((f) => f.itemIdentifier));
      // Lambda takes a response that names no message of the batch (an empty, missing or
      // unknown id) for a failure of the whole batch, and deletes none of it.
      const ids = new Set(records.map((r) => r.messageId));
      if ([...failed].some((id) => typeof id !== 'string' || !ids.has(id))) {
        throw new Error(`The batch response names a message that is not in the batch: ${JSON.stringify(response.batchItemFailures)}`);
      }
      const done = records.filter((r) => !failed.has(r.messageId));
      this.#kept(records.filter((r) => failed.has(r.messageId)));
      if (done.length > 0) {
        await client.send(
          new DeleteMessageBatchCommand({
            QueueUrl: queue.url,
            Entries: done.map((r, i) => ({ Id: String(i), ReceiptHandle: r.receiptHandle })),
          }),
        );
        for (const record of done) this.#undeleted.delete(record.messageId);
      }
    } catch (error) {
      if (!this.#running) return;
      logger.error('Invocation failed', { function: functionName, error });
    }
  }
}

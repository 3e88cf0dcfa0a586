/**
 * Gathers the SQS messages that concurrent callers send within a few
 * milliseconds into SendMessageBatch requests of up to 10 entries: the turns of
 * one distributor invocation, or the objects of one ingest request, then cost one
 * request where they cost one each. Each caller's promise settles when all of its
 * own entries were sent (entries SQS refused are retried), or fails with its batch.
 */
import { SendMessageBatchCommand, type SendMessageBatchRequestEntry, type SQSClient } from '@aws-sdk/client-sqs';

const MAX_BATCH_ENTRIES = 10;
const MAX_BATCH_BYTES = 256 * 1024;
const MAX_SEND_ATTEMPTS = 5;

export type BatchEntry = Omit<SendMessageBatchRequestEntry, 'Id'>;

/**
 * A message body as JSON with every character past ASCII escaped (`\uXXXX`). SQS
 * refuses a message holding a character outside its XML set (U+FFFE and U+FFFF, which
 * JSON.stringify leaves as they are, and which an accepted event may carry): the
 * object's doorbell or delivery would then fail on every try, and its queue with it.
 * JSON.parse reads the escapes back, so subscribers get the characters sent.
 *
 * DEL (U+007F) is ASCII and in SQS's set, and stays as it is: one byte escaped as six
 * would let a delivery's 256 KiB of events pass SQS's 1 MiB. Past ASCII an escape is
 * at most three times the character's UTF-8 bytes (SQS_MAX_MESSAGE_BYTES).
 */
export function sqsMessageBody(message: unknown): string {
  return JSON.stringify(message).replace(/[\u0080-\uffff]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

interface Pending {
  readonly entry: BatchEntry;
  readonly bytes: number;
  readonly settle: (error?: unknown) => void;
}

export class SendBatcher {
  readonly #client: SQSClient;
  readonly #queueUrl: string;
  readonly #lingerMs: number;
  #pending: Pending[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** `lingerMs`: how long a lone entry waits for company before it is sent. */
  constructor(options: { client: SQSClient; queueUrl: string; lingerMs?: number }) {
    this.#client = options.client;
    this.#queueUrl = options.queueUrl;
    this.#lingerMs = options.lingerMs ?? 5;
  }

  /** Sends the entries; resolves when every one of them is in the queue. */
  async send(entries: readonly BatchEntry[]): Promise<void> {
    const sent = Promise.all(
      entries.map(
        (entry) =>
          new Promise<void>((resolve, reject) => {
            this.#pending.push({
              entry,
              bytes: Buffer.byteLength(entry.MessageBody ?? ''),
              settle: (error) => (error === undefined ? resolve() : reject(error)),
            });
          }),
      ),
    );
    if (entries.length > 0) this.#schedule();
    await sent;
  }

  #schedule(): void {
    if (this.#pending.length >= MAX_BATCH_ENTRIES) {
      this.#flush();
      return;
    }
    this.#timer ??= setTimeout(() => this.#flush(), this.#lingerMs);
  }

  #flush(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    while (this.#pending.length > 0) {
      const batch: Pending[] = [];
      let bytes = 0;
      while (
        this.#pending.length > 0 &&
        batch.length < MAX_BATCH_ENTRIES &&
        (batch.length === 0 || bytes + (this.#pending[0] as Pending).bytes <= MAX_BATCH_BYTES)
      ) {
        const next = this.#pending.shift() as Pending;
        batch.push(next);
        bytes += next.bytes;
      }
      void this.#sendBatch(batch);
    }
  }

  async #sendBatch(batch: Pending[]): Promise<void> {
    let waiting = batch.map((pending, i) => ({ pending, id: String(i) }));
    try {
      for (let attempt = 0; waiting.length > 0; attempt++) {
        if (attempt === MAX_SEND_ATTEMPTS) throw new Error(`SQS refused ${waiting.length} messages`);
        if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, 25 * 2 ** attempt));
        const result = await this.#client.send(
          new SendMessageBatchCommand({
            QueueUrl: this.#queueUrl,
            Entries: waiting.map(({ pending, id }) => ({ ...pending.entry, Id: id })),
          }),
        );
        const failed = new Set((result.Failed ?? []).map((entry) => entry.Id));
        for (const { pending, id } of waiting) if (!failed.has(id)) pending.settle();
        waiting = waiting.filter(({ id }) => failed.has(id));
      }
    } catch (error) {
      for (const { pending } of waiting) pending.settle(error);
    }
  }
}

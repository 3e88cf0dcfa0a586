/**
 * The ceiling's raw emulator rates, from as many calling threads as the machine has
 * cores. Each call costs its caller three to four times the CPU it costs the emulator (the AWS
 * SDK's serialising, signing and HTTP), so one calling thread runs out of its core
 * while the emulators still have time to spare: its rate is the caller's limit, not
 * the emulators'. The pipeline's callers (the functions, the API) are several threads
 * too. `rawRate` runs one loop on the calling thread and one on each extra worker
 * (this same file), all over the same seconds, and adds their calls up. Each client
 * is built as the pipeline's are (`functions/adapters/aws.ts`) and observed as they
 * are (with nothing counted), so a call costs its caller the same.
 */
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { PutItemCommand } from '@aws-sdk/client-dynamodb';
import { SendMessageCommand } from '@aws-sdk/client-sqs';
import { type ClientOptions, dynamoClient, sqsClient } from '../functions/adapters/aws.ts';
import { observeCalls } from '../sandbox/observe.ts';

/** One raw operation, as plain data a worker can be started with. */
export type RawOperation =
  | { readonly service: 'dynamodb'; readonly client: ClientOptions; readonly table: string }
  | { readonly service: 'sqs'; readonly client: ClientOptions; readonly queueUrl: string };

interface ThreadData {
  readonly sluiceRawRate: true;
  readonly operation: RawOperation;
  readonly start: number;
  readonly end: number;
  readonly prefix: string;
}

/** Calls in flight on each thread: enough to keep its core busy. */
const IN_FLIGHT = 32;

/**
 * Makes calls of `operation` until `end`, counting those answered in [start, end): the
 * calls still in flight at `end` (up to IN_FLIGHT) are answered after it, and counting
 * them too raised each thread's rate by about 32 calls a window (6 a second over 5 s).
 */
async function loop(operation: RawOperation, start: number, end: number, prefix: string): Promise<number> {
  let n = 0;
  let i = 0;
  const call =
    operation.service === 'dynamodb'
      ? (() => {
          const client = dynamoClient(operation.client);
          observeCalls(client, 'dynamodb', () => {});
          return () =>
            client.send(new PutItemCommand({ TableName: operation.table, Item: { pk: { S: `ceiling#${prefix}${i++}` }, sk: { S: 'x' } } }));
        })()
      : (() => {
          const client = sqsClient(operation.client);
          observeCalls(client, 'sqs', () => {});
          return () => client.send(new SendMessageCommand({ QueueUrl: operation.queueUrl, MessageBody: 'x' }));
        })();
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (Date.now() < end) {
        await call();
        const answered = Date.now();
        if (answered >= start && answered < end) n++;
      }
    }),
  );
  return n;
}

/** Calls counted in [start, end) from the calling thread and `extraThreads` workers named `raw-caller-N`. */
export async function rawRate(operation: RawOperation, start: number, end: number, extraThreads: number): Promise<number> {
  const workers = Array.from(
    { length: extraThreads },
    (_, k) =>
      new Worker(new URL(import.meta.url), {
        workerData: { sluiceRawRate: true, operation, start, end, prefix: `w${k}-` } satisfies ThreadData,
        name: `raw-caller-${k + 1}`,
      }),
  );
  const counts = workers.map(
    (worker) =>
      new Promise<number>((resolve, reject) => {
        worker.once('message', (n: number) => resolve(n));
        worker.once('error', reject);
      }),
  );
  try {
    const all = await Promise.all([loop(operation, start, end, 'main-'), ...counts]);
    return all.reduce((a, b) => a + b, 0);
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

if (!isMainThread && (workerData as Partial<ThreadData> | undefined)?.sluiceRawRate === true) {
  const { operation, start, end, prefix } = workerData as ThreadData;
  parentPort?.postMessage(await loop(operation, start, end, prefix));
}

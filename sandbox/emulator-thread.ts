/**
 * The emulators on a thread of their own, inside the sandbox's process: dynalite
 * and fauxqs then use their own core for parsing, storage and HTTP, and the
 * functions' work on the main thread does not queue behind theirs (in AWS the
 * two never share a CPU). Started by `startEmulatorsOnThread`.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { startEmulators } from './emulators.ts';

const emulators = await startEmulators((workerData as { dataDir?: string }).dataDir);
parentPort?.on('message', async (message: { cmd: string; id?: number; from?: number; to?: number }) => {
  if (message.cmd === 'times') {
    const times = await emulators.dynamoServiceTimes(message.from ?? 0, message.to ?? Date.now());
    parentPort?.postMessage({ cmd: 'times', id: message.id, times });
    return;
  }
  if (message.cmd !== 'stop') return;
  await emulators.stop();
  parentPort?.postMessage({ cmd: 'stopped' });
});
parentPort?.postMessage({ cmd: 'ready', dynamo: emulators.dynamo, sqs: emulators.sqs });

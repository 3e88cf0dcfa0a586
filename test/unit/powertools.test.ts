import { Metrics } from '@aws-lambda-powertools/metrics';
import { describe, expect, it } from 'vitest';
import { metricsPort, publishMetrics } from '../../functions/adapters/powertools.ts';

/** The EMF documents a function writes while `act` runs (Powertools writes them to stdout). */
function emitted(act: () => void): Array<Record<string, unknown> & { _aws: { CloudWatchMetrics: Array<{ Dimensions: string[][] }> } }> {
  const written: string[] = [];
  const stdout = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((chunk: unknown) => {
    written.push(String(chunk));
    return true;
  }) as typeof process.stdout.write;
  try {
    act();
  } finally {
    process.stdout.write = stdout;
  }
  return written
    .join('')
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => JSON.parse(line));
}

describe('Powertools metrics port', () => {
  it("writes an invocation's dimensioned counts once per metric and dimensions, summed: not one EMF document per count", () => {
    // Prepare: a delivery batch of ten attempts, eight failed and two delivered.
    const metrics = new Metrics({ namespace: 'Sluice', serviceName: 'Sluice/Test' });
    const port = metricsPort(metrics);

    // Act
    const documents = emitted(() => {
      for (let i = 0; i < 8; i++) port.count('DeliveryAttempts', 1, { result: 'retry' });
      for (let i = 0; i < 2; i++) port.count('DeliveryAttempts', 1, { result: 'delivered' });
      publishMetrics(metrics);
    });

    // Assert: the plain metric (what alarms watch) and one copy per result (what the dashboard breaks down by).
    expect(documents).toHaveLength(3);
    const byDimensions = (names: string[]) =>
      documents.filter((d) => JSON.stringify(d._aws.CloudWatchMetrics[0]?.Dimensions) === JSON.stringify([names]));
    expect(byDimensions(['service']).map((d) => d.DeliveryAttempts)).toEqual([[1, 1, 1, 1, 1, 1, 1, 1, 1, 1]]);
    expect(byDimensions(['service', 'result']).map((d) => [d.result, d.DeliveryAttempts])).toEqual([
      ['retry', 8],
      ['delivered', 2],
    ]);
    // Nothing is left for the next invocation.
    expect(emitted(() => publishMetrics(metrics))).toEqual([]);
  });
});

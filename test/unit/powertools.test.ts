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

  it('writes a count that pages on its own when it is counted, so a killed invocation still pages; the rest at the end', () => {
    // Prepare: a delivery invocation that counted attempts, then wrote a dead letter.
    const metrics = new Metrics({ namespace: 'Sluice', serviceName: 'Sluice/Test' });
    const port = metricsPort(metrics);

    // Act: Lambda kills the invocation after the dead letter's count (its end never comes).
    const beforeTheEnd = emitted(() => {
      port.count('DeliveryAttempts', 1, { result: 'failed' });
      port.count('DeadLetters');
    });
    const atTheEnd = emitted(() => {
      port.count('EventsDelivered', 3);
      publishMetrics(metrics);
    });

    // Assert: the dead letter (and what was counted before it) is out before the end; nothing twice.
    expect(beforeTheEnd.map((d) => [d.DeadLetters, d.DeliveryAttempts])).toEqual([[1, 1]]);
    expect(atTheEnd.map((d) => [d.DeadLetters, d.EventsDelivered, d.DeliveryAttempts, d.result])).toEqual([
      [undefined, undefined, 1, 'failed'],
      [undefined, 3, undefined, undefined],
    ]);
  });

  it("writes a paging count's dimensioned copy when it is counted too: an alarm reads EventsDropped's retention drops alone", () => {
    const metrics = new Metrics({ namespace: 'Sluice', serviceName: 'Sluice/Test' });
    const port = metricsPort(metrics);

    // Act: the invocation is killed after the drop's count.
    const beforeTheEnd = emitted(() => port.count('EventsDropped', 7, { reason: 'retention' }));
    const atTheEnd = emitted(() => publishMetrics(metrics));

    // Assert: both the plain count and its copy by reason are out before the end; nothing twice.
    expect(beforeTheEnd.map((d) => [d._aws.CloudWatchMetrics[0]?.Dimensions, d.EventsDropped, d.reason])).toEqual([
      [[['service']], 7, undefined],
      [[['service', 'reason']], 7, 'retention'],
    ]);
    expect(atTheEnd).toEqual([]);
  });

  it('leaves a flood of rejections to the end of the invocation: one EMF document, not one per count', () => {
    const metrics = new Metrics({ namespace: 'Sluice', serviceName: 'Sluice/Test' });
    const port = metricsPort(metrics);

    const beforeTheEnd = emitted(() => {
      for (let i = 0; i < 5; i++) port.count('EventsRejected', 1);
    });
    const atTheEnd = emitted(() => publishMetrics(metrics));

    expect(beforeTheEnd).toEqual([]);
    expect(atTheEnd.map((d) => d.EventsRejected)).toEqual([[1, 1, 1, 1, 1]]);
  });
});

/** The `Sluice` stack: one Sluice construct, configured from cdk.json context `sluice`. */
import { Stack, type StackProps } from 'aws-cdk-lib';
import type { Construct } from 'constructs';
import { Sluice } from './sluice.ts';

export interface SluiceStackProps extends StackProps {
  /** Config overrides (cdk.json context `sluice`). @default {} */
  readonly config?: Readonly<Record<string, unknown>>;
}

export class SluiceStack extends Stack {
  readonly sluice: Sluice;

  constructor(scope: Construct, id: string, props: SluiceStackProps = {}) {
    super(scope, id, props);
    this.sluice = new Sluice(this, 'Sluice', { config: props.config ?? {} });
  }
}

// The shipped nginx configs (examples/lb) tested with a real nginx: see scenario.ts.

import { balancerSuite } from './scenario.ts'

balancerSuite('nginx')

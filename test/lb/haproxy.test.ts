// The shipped haproxy configs (examples/lb) tested with a real haproxy: see scenario.ts.

import { balancerSuite } from './scenario.ts'

balancerSuite('haproxy')

import { defineFaultSuite } from './faults.shared.js';

defineFaultSuite('direct');

"""Apple fleets: reading DDM status reports and reporting BSI compliance."""

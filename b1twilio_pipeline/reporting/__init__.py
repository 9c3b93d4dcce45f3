"""Reports over the snapshots for people, not alerts: overdue receivables by customer and age."""

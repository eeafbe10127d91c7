"""The bgtui screens: one stack per mode (operator, approver, auditor) plus shared modals."""

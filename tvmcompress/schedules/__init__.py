"""Default CPU/GPU schedules and MetaSchedule tuning."""

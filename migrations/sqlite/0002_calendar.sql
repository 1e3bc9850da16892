-- Holiday calendar years loaded at run time (PUT /api/v1/working-days/years/{year}); they
-- override the files of policies/calendars/ and are shared by every instance.
CREATE TABLE holiday_years (
    year INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    calendar TEXT NOT NULL,
    updated_by INTEGER REFERENCES users(id),
    updated_at TEXT NOT NULL
);

//! Any bytes, as a log file or a single record, in both formats: framing
//! and parsing never panic, framing never returns a record past the data,
//! and every record it returns is handed to the parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use safd_ems::framing::records;
use safd_ems::{Format, Zone};

fuzz_target!(|data: &[u8]| {
    let zone = Zone::utc();
    for format in [Format::A, Format::B] {
        for finished in [false, true] {
            let (found, resume) = records(data, format, finished);
            assert!(resume <= data.len());
            for record in found {
                assert!(record.start < record.end && record.end <= data.len());
                let _ = match format {
                    Format::A => safd_ems::text::parse(&record.text, &zone).map(drop),
                    Format::B => safd_ems::json::parse(&record.text).map(drop),
                };
            }
        }
    }
});

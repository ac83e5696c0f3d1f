-- EventBridge event patterns matched locally (dynlog.pattern). The cases come
-- from the Amazon EventBridge User Guide (page titles cited beside each group)
-- and from aws/event-ruler, the engine behind EventBridge, where the guide is
-- silent. Each case is { name, pattern (JSON), event (JSON), matches? }.
local errors = require "dynlog.errors"
local json = require "dynlog.json"
local pattern = require "dynlog.pattern"

-- The EC2 event of "Amazon EventBridge event patterns".
local EC2 = [[{
  "version": "0", "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
  "detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2",
  "account": "111122223333", "time": "2017-12-22T18:43:48Z", "region": "us-west-1",
  "resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"],
  "detail": {"instance-id": "i-1234567890abcdef0", "state": "terminated"}}]]

-- The Auto Scaling event of "Matching events on null values and empty strings
-- in Amazon EventBridge".
local AUTOSCALING = [[{
  "version": "0", "id": "3e3c153a-8339-4e30-8c35-687ebef853fe",
  "detail-type": "EC2 Instance Launch Successful", "source": "aws.autoscaling",
  "account": "123456789012", "time": "2015-11-11T21:31:47Z", "region": "us-east-1",
  "resources": [], "detail": {"eventVersion": "", "responseElements": null}}]]

-- The event of event-ruler's README ("Ruler by Example"), which the content
-- filtering examples of the guide are written against.
local RULER = [[{
  "version": "0", "id": "ddddd4-aaaa-7777-4444-345dd43cc333",
  "detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2",
  "account": "012345679012", "time": "2017-10-02T16:24:49Z", "region": "us-east-1",
  "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-000000aaaaaa00000"],
  "detail": {"c-count": 5, "d-count": 3, "x-limit": 301.8, "source-ip": "10.0.0.33",
             "instance-id": "i-000000aaaaaa00000", "state": "running"}}]]

-- The array event of event-ruler's README ("JSON Array Matching").
local EMPLOYEES = [[{"employees": [
  {"firstName": "John", "lastName": "Doe"},
  {"firstName": "Anna", "lastName": "Smith"},
  {"firstName": "Peter", "lastName": "Jones"}]}]]

local EC2_TERMINATION = [[{
  "source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"],
  "detail": {"state": ["terminated"]}}]]

local CASES = {
  -- "Amazon EventBridge event patterns" / "Event pattern syntax"
  { "the documented EC2 termination pattern matches the EC2 termination event", EC2_TERMINATION, EC2, true },
  { "the EC2 termination pattern does not match a running instance", EC2_TERMINATION,
    [[{"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification",
       "detail": {"state": "running"}}]], false },
  { "every field of the pattern must match (fields are ANDed)", EC2_TERMINATION,
    [[{"source": "aws.s3", "detail-type": "EC2 Instance State-change Notification",
       "detail": {"state": "terminated"}}]], false },
  { "event fields the pattern does not name are ignored", [[{"detail": {"state": ["terminated"]}}]], EC2, true },
  { "a value listed for a field matches when any listed value does (values are ORed)",
    [[{"source": ["aws.ec2", "aws.fargate"]}]], [[{"source": "aws.fargate"}]], true },
  { "a value outside the listed values does not match", [[{"source": ["aws.ec2", "aws.fargate"]}]],
    [[{"source": "aws.s3"}]], false },
  { "a field named by the pattern but missing from the event does not match",
    [[{"detail": {"state": ["terminated"]}}]], [[{"detail": {"instance-id": "i-1"}}]], false },
  { "nested fields must appear with the same nesting in the event",
    [[{"detail": {"state": ["terminated"]}}]], [[{"state": "terminated", "detail": {}}]], false },
  { "strings match character by character, without case folding",
    [[{"detail": {"state": ["terminated"]}}]], [[{"detail": {"state": "Terminated"}}]], false },
  { "nested numeric fields match (the Macie risk score example)",
    [[{"source": ["aws.macie"], "detail-type": ["Macie Alert"],
       "detail": {"risk-score": [80], "trigger": {"risk": [8]}}}]],
    [[{"source": "aws.macie", "detail-type": "Macie Alert",
       "detail": {"risk-score": 80, "trigger": {"risk": 8, "alert-type": "basic"}}}]], true },
  { "a different nested number does not match (the Macie example)",
    [[{"source": ["aws.macie"], "detail": {"risk-score": [80], "trigger": {"risk": [8]}}}]],
    [[{"source": "aws.macie", "detail": {"risk-score": 80, "trigger": {"risk": 9}}}]], false },
  -- Numbers: the guide's "Considerations" say 300, 300.0 and 3.0e2 are not
  -- equal, but event-ruler, the engine EventBridge runs, compiles a number of
  -- a pattern into an exact match of its text and a numeric match of its
  -- value (JsonRuleCompiler.writeRules), so within -5e9..5e9 they are equal:
  -- dynlog follows the engine.
  { "numbers compare numerically: 300 matches 300.0", [[{"n": [300]}]], [[{"n": 300.0}]], true },
  { "numbers compare numerically: 300 matches 3.0e2", [[{"n": [300]}]], [[{"n": 3.0e2}]], true },
  { "a number does not match the same digits in a string", [[{"n": [300]}]], [[{"n": "300"}]], false },
  { "a string does not match the same digits as a number", [[{"n": ["300"]}]], [[{"n": 300}]], false },
  { "a 12-digit account number matches exactly (event-ruler testBigNumbers)",
    [[{"account": [123456789012]}]], [[{"account": 123456789012}]], true },
  { "booleans match booleans", [[{"detail": {"on": [true]}}]], [[{"detail": {"on": true}}]], true },
  { "true does not match false or the string \"true\"", [[{"detail": {"on": [true]}}]],
    [[{"detail": {"on": ["false", false]}}]], false },
  { "the last of two identical keys is the one used (Content filtering, note on duplicate keys)",
    [[{"detail": {"location": [{"prefix": "us-"}], "location": [{"anything-but": "us-east"}]}}]],
    [[{"detail": {"location": "eu-west"}}]], true },

  -- "Matching events on null values and empty strings in Amazon EventBridge"
  { "an empty string matches an empty string value", [[{"detail": {"eventVersion": [""]}}]], AUTOSCALING, true },
  { "null matches a null value", [[{"detail": {"responseElements": [null]}}]], AUTOSCALING, true },
  { "an empty string does not match null", [[{"detail": {"responseElements": [""]}}]], AUTOSCALING, false },
  { "null does not match an empty string", [[{"detail": {"eventVersion": [null]}}]], AUTOSCALING, false },
  { "null does not match a missing field", [[{"detail": {"userAgent": [null]}}]], AUTOSCALING, false },
  { "the documented null pattern matches the whole Auto Scaling event",
    [[{"source": ["aws.autoscaling"], "detail-type": ["EC2 Instance Launch Successful"],
       "detail": {"responseElements": [null]}}]], AUTOSCALING, true },

  -- "Arrays in Amazon EventBridge event patterns" (matching on multiple field values)
  { "an array in the event matches when it shares a value with the pattern",
    [[{"resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f",
                     "arn:aws:ec2:us-east-1:111122223333:instance/i-b188560f",
                     "arn:aws:ec2:us-east-1:444455556666:instance/i-b188560f"]}]],
    [[{"resources": ["arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:eb56d16b:autoScalingGroupName/ASG",
                     "arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f"]}]], true },
  { "an array in the event that shares no value with the pattern does not match",
    [[{"resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f"]}]],
    [[{"resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-00000000"]}]], false },
  { "an empty array in the event matches no value", [[{"resources": ["arn:x"]}]], AUTOSCALING, false },
  { "arrays of arrays are flattened (event-ruler README)", [[{"tags": ["b"]}]], [=[{"tags": [["a"], ["b"]]}]=], true },
  { "operators apply to each element of an event array", [[{"tags": [{"prefix": "fl"}]}]],
    [[{"tags": ["2015Q1", "fleet"]}]], true },

  -- "JSON Array Matching" in aws/event-ruler's README: fields of one pattern
  -- object must match within one element of an event array.
  { "a nested pattern matches a field inside any element of an array of objects",
    [[{"employees": {"firstName": ["Anna"]}}]], EMPLOYEES, true },
  { "two fields match when they come from the same array element",
    [[{"employees": {"firstName": ["Anna"], "lastName": ["Smith"]}}]], EMPLOYEES, true },
  { "two fields taken from different array elements do not match",
    [[{"employees": {"firstName": ["Anna"], "lastName": ["Jones"]}}]], EMPLOYEES, false },
  { "exists false inside an array of objects holds when no element has the field",
    [[{"employees": {"middleName": [{"exists": false}]}}]], EMPLOYEES, true },
  { "exists false inside an array of objects fails when some element has the field",
    [[{"employees": {"lastName": [{"exists": false}]}}]], EMPLOYEES, false },

  -- "Content filtering in Amazon EventBridge event patterns" and
  -- "Comparison operators for use in event patterns in Amazon EventBridge"
  -- Prefix matching
  { "prefix matches the start of a string", [[{"time": [{"prefix": "2017-10-02"}]}]],
    [[{"time": "2017-10-02T18:43:48Z"}]], true },
  { "prefix does not match another start", [[{"time": [{"prefix": "2017-10-02"}]}]],
    [[{"time": "2017-10-03T18:43:48Z"}]], false },
  { "prefix is case sensitive", [[{"Region": [{"prefix": "us-"}]}]], [[{"Region": "US-east-1"}]], false },
  { "prefix sees only strings", [[{"n": [{"prefix": "12"}]}]], [[{"n": 123}]], false },
  { "prefix with equals-ignore-case matches any casing",
    [[{"detail": {"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}}]],
    [[{"detail": {"service": "eventbridge"}}]], true },
  { "prefix with equals-ignore-case still needs the prefix",
    [[{"detail": {"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}}]],
    [[{"detail": {"service": "sns"}}]], false },
  -- Suffix matching
  { "suffix matches the end of a string", [[{"FileName": [{"suffix": ".png"}]}]],
    [[{"FileName": "image.png"}]], true },
  { "suffix is case sensitive", [[{"FileName": [{"suffix": ".png"}]}]], [[{"FileName": "image.PNG"}]], false },
  { "suffix with equals-ignore-case matches any casing",
    [[{"detail": {"FileName": [{"suffix": {"equals-ignore-case": ".png"}}]}}]],
    [[{"detail": {"FileName": "image.PNG"}}]], true },
  { "suffix with equals-ignore-case still needs the suffix",
    [[{"detail": {"FileName": [{"suffix": {"equals-ignore-case": ".png"}}]}}]],
    [[{"detail": {"FileName": "image.jpg"}}]], false },
  -- Equals-ignore-case matching
  { "equals-ignore-case matches any casing", [[{"Name": [{"equals-ignore-case": "alice"}]}]],
    [[{"Name": "ALICE"}]], true },
  { "equals-ignore-case still needs the same letters", [[{"Name": [{"equals-ignore-case": "alice"}]}]],
    [[{"Name": "Alicia"}]], false },
  { "equals-ignore-case folds accented capitals", [[{"Name": [{"equals-ignore-case": "ÄRGER"}]}]],
    [[{"Name": "ärger"}]], true },
  { "equals-ignore-case folds Greek and Cyrillic capitals",
    [[{"Name": [{"equals-ignore-case": "ΣΟΦΙΑ"}, {"equals-ignore-case": "МОСКВА"}]}]],
    [[{"Name": ["σοφια", "москва"]}]], true },
  { "equals-ignore-case does not fold an accented letter to a plain one",
    [[{"Name": [{"equals-ignore-case": "Ä"}]}]], [[{"Name": "a"}]], false },
  { "prefix equals-ignore-case compares whole accented letters",
    [[{"Name": [{"prefix": {"equals-ignore-case": "Äp"}}]}]], [[{"Name": "äPFEL"}]], true },
  { "anything-but equals-ignore-case excludes accented casings",
    [[{"Name": [{"anything-but": {"equals-ignore-case": ["äpfel", "birne"]}}]}]], [[{"Name": "ÄPFEL"}]], false },
  -- Every script, as event-ruler's EqualsIgnoreCaseParser takes each pattern
  -- character's lower and upper case form (Java's, Locale.ROOT).
  { "equals-ignore-case folds Greek letters with tonos", [[{"Name": [{"equals-ignore-case": "Ά"}]}]],
    [[{"Name": "ά"}]], true },
  { "equals-ignore-case folds Armenian", [[{"Name": [{"equals-ignore-case": "Ա"}]}]], [[{"Name": "ա"}]], true },
  { "equals-ignore-case folds Latin Extended-B digraphs both ways",
    [[{"Name": [{"equals-ignore-case": "Ǆ"}, {"equals-ignore-case": "ǆx"}]}]], [[{"Name": ["ǆ", "ǄX"]}]], true },
  { "equals-ignore-case folds Georgian, Cherokee and fullwidth letters",
    [[{"a": [{"equals-ignore-case": "Ⴀ"}], "b": [{"equals-ignore-case": "Ꭰ"}], "c": [{"equals-ignore-case": "ＡＢ"}]}]],
    [[{"a": "ⴀ", "b": "ꭰ", "c": "ａｂ"}]], true },
  { "a titlecase letter matches its lower and upper case, not itself (as in event-ruler)",
    [[{"Name": [{"equals-ignore-case": "ǅ"}]}]], [[{"Name": "ǅ"}]], false },
  { "a titlecase letter matches its lower case", [[{"Name": [{"equals-ignore-case": "ǅ"}]}]],
    [[{"Name": "ǆ"}]], true },
  { "ß matches its upper case SS", [[{"Street": [{"equals-ignore-case": "Straße"}]}]],
    [[{"Street": "STRASSE"}]], true },
  { "SS in a pattern does not match ß, whose forms it is not",
    [[{"Street": [{"equals-ignore-case": "strasse"}]}]], [[{"Street": "straße"}]], false },
  { "forms of different lengths (event-ruler's own example, ⱥ and Ⱥ) still count characters",
    [[{"a": [{"equals-ignore-case": "ⱥⱥ"}]}]], [[{"a": "ȺⱥȺ"}]], false },
  { "ⱥ matches Ⱥ, whose UTF-8 is a byte shorter, character by character",
    [[{"a": [{"equals-ignore-case": "ⱥⱥ"}]}]], [[{"a": "Ⱥⱥ"}]], true },
  { "ΰ matches its three-character upper case (event-ruler's own example)",
    [[{"a": [{"equals-ignore-case": "\u03b0"}]}]], [[{"a": ["\u03a5\u0308\u0301"]}]], true },
  { "prefix equals-ignore-case with forms of different lengths",
    [[{"a": [{"prefix": {"equals-ignore-case": "ⱥb"}}]}]], [[{"a": "ȺBcd"}]], true },
  { "suffix equals-ignore-case with forms of different lengths",
    [[{"a": [{"suffix": {"equals-ignore-case": "aⱥ"}}]}]], [[{"a": "xyAȺ"}]], true },
  { "suffix equals-ignore-case still needs the suffix", [[{"a": [{"suffix": {"equals-ignore-case": "aⱥ"}}]}]],
    [[{"a": "xyȺA"}]], false },
  { "anything-but equals-ignore-case excludes Greek casings",
    [[{"City": [{"anything-but": {"equals-ignore-case": ["αθηνα", "σπαρτη"]}}]}]], [[{"City": "ΑΘΗΝΑ"}]], false },
  { "characters beyond the Basic Multilingual Plane match only themselves",
    [[{"a": [{"equals-ignore-case": "𐐀"}]}]], [[{"a": ["𐐨", "𐐀x"]}]], false },
  { "characters beyond the Basic Multilingual Plane match themselves",
    [[{"a": [{"equals-ignore-case": "x𐐀"}]}]], [[{"a": "X𐐀"}]], true },
  -- Wildcard matching
  { "wildcard matches any run of characters", [[{"source": [{"wildcard": "Simple*Service"}]}]],
    [[{"source": "Simple Notification Service"}]], true },
  { "wildcard needs the literal parts", [[{"source": [{"wildcard": "Simple*Service"}]}]],
    [[{"source": "Simple Notification Server"}]], false },
  { "a wildcard may match nothing", [[{"source": [{"wildcard": "Simple*Service"}]}]],
    [[{"source": "SimpleService"}]], true },
  { "wildcards match paths with several stars", [[{"FilePath": [{"wildcard": "*/lib/*"}]}]],
    [[{"FilePath": "/usr/lib/libc.so"}]], true },
  { "an escaped star matches only a star", [[{"a": [{"wildcard": "a\\*b"}]}]], [[{"a": "axb"}]], false },
  { "an escaped star matches a literal star", [[{"a": [{"wildcard": "a\\*b"}]}]], [[{"a": "a*b"}]], true },
  { "wildcard sees only strings", [[{"n": [{"wildcard": "1*"}]}]], [[{"n": 123}]], false },
  -- Anything-but matching
  { "anything-but a string matches other strings", [[{"detail": {"state": [{"anything-but": "initializing"}]}}]],
    RULER, true },
  { "anything-but a string does not match that string",
    [[{"detail": {"state": [{"anything-but": "initializing"}]}}]], [[{"detail": {"state": "initializing"}}]], false },
  { "anything-but does not match a missing field", [[{"detail": {"state": [{"anything-but": "initializing"}]}}]],
    [[{"detail": {}}]], false },
  { "anything-but a number matches other numbers", [[{"detail": {"x-limit": [{"anything-but": 123}]}}]],
    RULER, true },
  { "anything-but a number does not match that number", [[{"detail": {"x-limit": [{"anything-but": 123}]}}]],
    [[{"detail": {"x-limit": 123.0}}]], false },
  { "anything-but a string matches a number with the same digits", [[{"n": [{"anything-but": "123"}]}]],
    [[{"n": 123}]], true },
  { "anything-but a list of strings matches a string outside it",
    [[{"detail": {"state": [{"anything-but": ["stopped", "overloaded"]}]}}]], RULER, true },
  { "anything-but a list of strings does not match a listed string",
    [[{"detail": {"state": [{"anything-but": ["stopped", "overloaded"]}]}}]],
    [[{"detail": {"state": "overloaded"}}]], false },
  { "anything-but a list of numbers matches a number outside it",
    [[{"detail": {"x-limit": [{"anything-but": [100, 200, 300]}]}}]], RULER, true },
  { "anything-but a list of numbers does not match a listed number",
    [[{"detail": {"x-limit": [{"anything-but": [100, 200, 300]}]}}]], [[{"detail": {"x-limit": 200}}]], false },
  { "anything-but matches an event array holding any other value", [[{"price": [{"anything-but": [100, 500]}]}]],
    [[{"price": [100, 50]}]], true },
  { "anything-but does not match an event array of excluded values",
    [[{"price": [{"anything-but": [100, 500]}]}]], [[{"price": [100, 500]}]], false },
  { "anything-but prefix matches strings without the prefix",
    [[{"detail": {"state": [{"anything-but": {"prefix": "init"}}]}}]], RULER, true },
  { "anything-but prefix does not match strings with the prefix",
    [[{"detail": {"state": [{"anything-but": {"prefix": "init"}}]}}]], [[{"detail": {"state": "initializing"}}]],
    false },
  { "anything-but a list of prefixes excludes each prefix",
    [[{"Region": [{"anything-but": {"prefix": ["us-", "eu-"]}}]}]],
    [[{"Region": "eu-west-1"}]], false },
  { "anything-but a list of prefixes matches other strings",
    [[{"Region": [{"anything-but": {"prefix": ["us-", "eu-"]}}]}]], [[{"Region": "ap-south-1"}]], true },
  { "anything-but suffix matches strings without the suffix", [[{"FileName": [{"anything-but": {"suffix": ".png"}}]}]],
    [[{"FileName": "photo.jpg"}]], true },
  { "anything-but suffix does not match strings with the suffix",
    [[{"FileName": [{"anything-but": {"suffix": ".png"}}]}]], [[{"FileName": "photo.png"}]], false },
  { "anything-but equals-ignore-case matches other strings",
    [[{"state": [{"anything-but": {"equals-ignore-case": "initializing"}}]}]], [[{"state": "running"}]], true },
  { "anything-but equals-ignore-case excludes every casing",
    [[{"state": [{"anything-but": {"equals-ignore-case": "initializing"}}]}]], [[{"state": "INITIALIZING"}]], false },
  { "anything-but a list of suffixes excludes each suffix",
    [[{"FileName": [{"anything-but": {"suffix": [".txt", ".jpg"]}}]}]], [[{"FileName": "photo.jpg"}]], false },
  { "anything-but a list of suffixes matches other strings",
    [[{"FileName": [{"anything-but": {"suffix": [".txt", ".jpg"]}}]}]], [[{"FileName": "photo.png"}]], true },
  { "anything-but a list of wildcards excludes each wildcard",
    [[{"FilePath": [{"anything-but": {"wildcard": ["*/lib/*", "*/bin/*"]}}]}]], [[{"FilePath": "/usr/bin/env"}]],
    false },
  { "anything-but a list of wildcards matches strings outside all of them",
    [[{"FilePath": [{"anything-but": {"wildcard": ["*/lib/*", "*/bin/*"]}}]}]], [[{"FilePath": "/etc/hosts"}]], true },
  { "anything-but wildcard matches strings outside the wildcard",
    [[{"FilePath": [{"anything-but": {"wildcard": "*/lib/*"}}]}]], [[{"FilePath": "/usr/bin/env"}]], true },
  { "anything-but wildcard does not match strings inside the wildcard",
    [[{"FilePath": [{"anything-but": {"wildcard": "*/lib/*"}}]}]], [[{"FilePath": "/usr/lib/libc.so"}]], false },
  -- Numeric matching
  { "numeric ranges and equality match the documented example",
    [[{"detail": {"c-count": [{"numeric": [">", 0, "<=", 5]}], "d-count": [{"numeric": ["<", 10]}],
                  "x-limit": [{"numeric": ["=", 3.018e2]}]}}]], RULER, true },
  { "a number outside the range does not match", [[{"detail": {"c-count": [{"numeric": [">", 0, "<=", 5]}]}}]],
    [[{"detail": {"c-count": 6}}]], false },
  { "an open lower bound excludes the bound", [[{"c": [{"numeric": [">", 0, "<=", 5]}]}]], [[{"c": 0}]], false },
  { "a closed upper bound includes the bound", [[{"c": [{"numeric": [">", 0, "<=", 5]}]}]], [[{"c": 5}]], true },
  { "a closed lower bound includes the bound", [[{"c": [{"numeric": [">=", 0, "<", 5]}]}]], [[{"c": 0}]], true },
  { "an open upper bound excludes the bound", [[{"c": [{"numeric": [">=", 0, "<", 5]}]}]], [[{"c": 5}]], false },
  { "numeric sees only numbers", [[{"c": [{"numeric": ["<", 10]}]}]], [[{"c": "5"}]], false },
  { "numeric ignores numbers beyond 5e9", [[{"c": [{"numeric": [">", 0]}]}]], [[{"c": 6e9}]], false },
  { "numeric equality matches another spelling of the number", [[{"x": [{"numeric": ["=", 3.018e2]}]}]],
    [[{"x": 301.8}]], true },
  -- IP address matching
  { "cidr matches an IPv4 address in the block", [[{"detail": {"sourceIPAddress": [{"cidr": "10.0.0.0/24"}]}}]],
    [[{"detail": {"sourceIPAddress": "10.0.0.255"}}]], true },
  { "cidr does not match an IPv4 address outside the block",
    [[{"detail": {"sourceIPAddress": [{"cidr": "10.0.0.0/24"}]}}]], [[{"detail": {"sourceIPAddress": "10.0.1.0"}}]],
    false },
  { "cidr matches an IPv6 address in the block", [[{"ip": [{"cidr": "2001:db8::/32"}]}]],
    [[{"ip": "2001:DB8:0:0:1::1"}]], true },
  { "cidr does not match an IPv6 address outside the block", [[{"ip": [{"cidr": "2001:db8::/32"}]}]],
    [[{"ip": "2001:db9::1"}]], false },
  { "an IPv4 block does not match an IPv6 address", [[{"ip": [{"cidr": "0.0.0.0/0"}]}]], [[{"ip": "::1"}]], false },
  { "cidr does not match a string that is not an address", [[{"ip": [{"cidr": "10.0.0.0/8"}]}]],
    [[{"ip": "10.0.0.x"}]], false },
  { "cidr does not match an address with surrounding spaces", [[{"ip": [{"cidr": "10.0.0.0/8"}]}]],
    [[{"ip": " 10.0.0.1"}]], false },
  { "cidr sees only strings", [[{"ip": [{"cidr": "0.0.0.0/0"}]}]], [[{"ip": 167772161}]], false },
  { "cidr ranges run from the address as written, like event-ruler's", [[{"ip": [{"cidr": "10.0.0.5/24"}]}]],
    [[{"ip": ["10.0.0.4", "10.0.0.200"]}]], true },
  -- Exists matching
  { "exists true matches a present field", [[{"detail": {"state": [{"exists": true}]}}]], EC2, true },
  { "exists true does not match a missing field", [[{"detail": {"state": [{"exists": true}]}}]],
    [[{"detail": {"c-count": {"c1": 100}}}]], false },
  { "exists false matches a missing field", [[{"detail": {"c-count": [{"exists": false}]}}]], EC2, true },
  { "exists false does not match a present field", [[{"detail": {"c-count": [{"exists": false}]}}]], RULER, false },
  { "exists false matches a field holding an object, which is not a leaf",
    [[{"detail": {"c-count": [{"exists": false}]}}]], [[{"detail": {"c-count": {"c1": 100}}}]], true },
  { "exists true matches a null value", [[{"detail": {"responseElements": [{"exists": true}]}}]], AUTOSCALING, true },
  { "exists true does not match an empty array, which holds no value", [[{"resources": [{"exists": true}]}]],
    AUTOSCALING, false },
  { "exists false with another value matches either way", [[{"detail": {"state": ["running", {"exists": false}]}}]],
    AUTOSCALING, true },
  -- Empty
  { "an empty string value is matched by [\"\"]", [[{"LastName": [""]}]], [[{"LastName": ""}]], true },
  { "a non-empty string is not matched by [\"\"]", [[{"LastName": [""]}]], [[{"LastName": "Doe"}]], false },
  -- Complex example with multiple matching
  { "the documented complex pattern matches",
    [[{"time": [{"prefix": "2017-10-02"}],
       "detail": {"state": [{"anything-but": "initializing"}], "c-count": [{"numeric": [">", 0, "<=", 5]}],
                  "d-count": [{"numeric": ["<", 10]}], "x-limit": [{"anything-but": [100, 200, 300]}],
                  "source-ip": [{"cidr": "10.0.0.0/8"}]}}]], RULER, true },
  { "the documented complex pattern fails on one field",
    [[{"time": [{"prefix": "2017-10-02"}],
       "detail": {"state": [{"anything-but": "initializing"}], "c-count": [{"numeric": [">", 0, "<=", 5]}],
                  "d-count": [{"numeric": ["<", 10]}], "x-limit": [{"anything-but": [100, 200, 300]}]}}]],
    [[{"time": "2017-10-02T16:24:49Z",
       "detail": {"state": "running", "c-count": 5, "d-count": 3, "x-limit": 300}}]], false },
  -- $or matching (the guide's $or section; event-ruler README "The $or Primitive")
  { "$or matches when any branch matches",
    [[{"source": ["aws.cloudwatch"], "$or": [{"metricName": ["CPUUtilization", "ReadLatency"]},
                                             {"namespace": ["AWS/EC2", "AWS/ES"]}]}]],
    [[{"source": "aws.cloudwatch", "metricName": "DiskReadOps", "namespace": "AWS/EC2"}]], true },
  { "$or fails when no branch matches",
    [[{"source": ["aws.cloudwatch"], "$or": [{"metricName": ["CPUUtilization", "ReadLatency"]},
                                             {"namespace": ["AWS/EC2", "AWS/ES"]}]}]],
    [[{"source": "aws.cloudwatch", "metricName": "DiskReadOps", "namespace": "AWS/S3"}]], false },
  { "$or is ANDed with the other fields",
    [[{"source": ["aws.cloudwatch"], "$or": [{"metricName": ["CPUUtilization"]}, {"namespace": ["AWS/EC2"]}]}]],
    [[{"source": "aws.ec2", "metricName": "CPUUtilization"}]], false },
  { "a $or branch ANDs its own fields",
    [[{"source": ["aws.cloudwatch"], "$or": [{"metricName": ["CPUUtilization"]},
                                             {"metricType": ["MetricType"], "namespace": ["AWS/EC2"]},
                                             {"scope": ["Service"]}]}]],
    [[{"source": "aws.cloudwatch", "metricType": "MetricType", "namespace": "AWS/ES"}]], false },
  { "nested $or inside a $or branch",
    [[{"source": ["aws.cloudwatch"],
       "$or": [{"metricName": ["CPUUtilization"]},
               {"metricType": ["MetricType"], "namespace": ["AWS/EC2"],
                "$or": [{"metricId": [1234]}, {"spaceId": [1000]}]}]}]],
    [[{"source": "aws.cloudwatch", "metricType": "MetricType", "namespace": "AWS/EC2", "spaceId": 1000}]], true },
  { "$or works inside a nested object",
    [[{"detail": {"$or": [{"state": ["running"]}, {"state": ["terminated"]}]}}]], EC2, true },
  { "parallel $or groups must each match",
    [[{"$or": [{"metricName": ["CPUUtilization"]}, {"namespace": ["AWS/EC2"]}],
       "detail": {"$or": [{"source": ["aws.cloudwatch"]}, {"detail-type": ["CloudWatch Alarm State Change"]}]}}]],
    [[{"namespace": "AWS/EC2", "detail": {"source": "aws.s3", "detail-type": "Object Created"}}]], false },

  -- event-ruler's README, "The backward compatibility of using "$or" as
  -- field name in the rule": a "$or" that is not an array of at least two
  -- objects free of operator names is an ordinary field name.
  { "\"$or\" holding an object is a field of that name",
    [[{"source": ["aws.cloudwatch"], "$or": {"metricType": ["MetricType"], "namespace": ["AWS/EC2", "AWS/ES"]}}]],
    [[{"source": "aws.cloudwatch", "$or": {"metricType": "MetricType", "namespace": "AWS/ES"}}]], true },
  { "\"$or\" holding an object does not OR its fields",
    [[{"$or": {"metricType": ["MetricType"], "namespace": ["AWS/EC2"]}}]],
    [[{"metricType": "MetricType", "$or": {"namespace": "AWS/EC2"}}]], false },
  { "\"$or\" holding match values is a field of that name", [[{"$or": ["a", "b"]}]], [[{"$or": "b"}]], true },
  { "\"$or\" holding operator objects is a field of that name",
    [[{"$or": [{"prefix": "a"}, {"suffix": "z"}]}]], [[{"$or": ["x", "a1"]}]], true },

  -- Whole-event matching on the envelope's top-level fields
  { "top-level envelope fields match together",
    [[{"account": ["111122223333"], "region": ["us-west-1"], "detail-type": [{"prefix": "EC2 Instance"}],
       "resources": [{"wildcard": "arn:aws:ec2:*:instance/*"}], "id": [{"exists": true}]}]], EC2, true },
  { "one top-level field off spoils the whole match",
    [[{"account": ["111122223333"], "region": ["us-east-1"]}]], EC2, false },
}

-- Patterns compile() refuses, with the words the error must contain.
local INVALID = {
  { "text that is not JSON", [[{"source": ]], "not valid JSON" },
  { "a top-level array", [[["aws.ec2"] ]], "must be a JSON object" },
  { "an empty pattern", [[{}]], "must not be an empty object" },
  { "a bare value instead of an array", [[{"source": "aws.ec2"}]],
    "value must be an array of match values or an object at source" },
  { "a bare number", [[{"a": 1}]], "at a" },
  { "an empty array of match values", [[{"detail": {"type": []}}]], "empty arrays are not allowed at detail.type" },
  { "an empty nested object", [[{"detail": {}}]], "empty objects are not allowed at detail" },
  { "an array inside the match values", [=[{"a": [["x"]]}]=], "not arrays" },
  { "an unknown operator", [[{"a": [{"contains": "x"}]}]], [[unknown operator "contains" at a]] },
  { "an empty operator object", [[{"a": [{}]}]], "empty operator object at a" },
  { "two operators in one object", [[{"a": [{"prefix": "x", "suffix": "y"}]}]], "exactly one operator at a" },
  { "a non-string prefix", [[{"detail": {"type": [{"prefix": 5}]}}]], "prefix must be a string at detail.type" },
  { "a list of prefixes", [[{"a": [{"prefix": ["x"]}]}]], "prefix must be a string at a" },
  { "prefix with an operator other than equals-ignore-case", [[{"a": [{"prefix": {"wildcard": "x"}}]}]],
    "prefix supports only equals-ignore-case" },
  { "a non-string prefix equals-ignore-case", [[{"a": [{"prefix": {"equals-ignore-case": 5}}]}]],
    "prefix equals-ignore-case must be a string at a" },
  { "a non-string suffix", [[{"a": [{"suffix": 3}]}]], "suffix must be a string at a" },
  { "a list for suffix equals-ignore-case", [[{"a": [{"suffix": {"equals-ignore-case": ["abc"]}}]}]],
    "suffix equals-ignore-case must be a string at a" },
  { "a list for equals-ignore-case", [[{"a": [{"equals-ignore-case": ["abc"]}]}]],
    "equals-ignore-case must be a string at a" },
  { "a non-string wildcard", [[{"a": [{"wildcard": 5}]}]], "wildcard must be a string at a" },
  { "consecutive wildcard stars", [[{"key": [{"wildcard": "abc**def"}]}]],
    "consecutive wildcard characters at position 4" },
  { "a wildcard escape other than \\* or \\\\", [[{"key": [{"wildcard": "a*c\\def"}]}]],
    "invalid escape at position 4" },
  { "a wildcard ending in a backslash", [[{"key": [{"wildcard": "foo*bar\\"}]}]], "invalid escape" },
  { "anything-but mixing strings and numbers", [[{"a": [{"anything-but": ["child0", 111]}]}]],
    "only strings or only numbers" },
  { "an empty anything-but list", [[{"a": [{"anything-but": []}]}]], "anything-but list must not be empty at a" },
  { "anything-but null", [[{"a": [{"anything-but": null}]}]], "anything-but must be a string, a number" },
  { "anything-but true", [[{"a": [{"anything-but": [true]}]}]], "only strings or only numbers" },
  { "anything-but an empty prefix", [[{"a": [{"anything-but": {"prefix": ""}}]}]],
    "anything-but prefix must not be empty at a" },
  { "anything-but an empty suffix in a list", [[{"a": [{"anything-but": {"suffix": ["1", ""]}}]}]],
    "anything-but suffix must not be empty" },
  { "anything-but numeric prefixes", [[{"a": [{"anything-but": {"prefix": [1, 2]}}]}]],
    "anything-but prefix values must be strings" },
  { "anything-but with an unsupported operator", [[{"a": [{"anything-but": {"numeric": [">", 1]}}]}]],
    [[anything-but does not support "numeric"]] },
  { "anything-but with two operators", [[{"a": [{"anything-but": {"prefix": "a", "suffix": "b"}}]}]],
    "anything-but takes exactly one of" },
  { "anything-but a bad wildcard", [[{"a": [{"anything-but": {"wildcard": ["1", "foo**bar"]}}]}]],
    "consecutive wildcard characters" },
  { "anything-but a number beyond 5e9", [[{"a": [{"anything-but": 6e9}]}]], "between -5e9 and 5e9" },
  { "numeric that is not an array", [[{"x": [{"numeric": ">"}]}]], "numeric must be an array" },
  { "numeric with an unknown operator", [[{"x": [{"numeric": ["==", 1]}]}]], "numeric operator must be one of" },
  { "numeric with a string value", [[{"x": [{"numeric": ["<", "-4e-6"]}]}]], "value after < must be a number" },
  { "numeric with a boolean value", [[{"x": [{"numeric": ["=", true]}]}]], "value after = must be a number" },
  { "numeric with an operator and no value", [[{"x": [{"numeric": ["<"]}]}]], "one or two comparisons" },
  { "numeric with too many terms", [[{"x": [{"numeric": [">", 1, "<", 30, false]}]}]], "one or two comparisons" },
  { "numeric with the upper bound first", [[{"x": [{"numeric": ["<", 1, ">", 0]}]}]],
    "lower bound (> or >=) then an upper bound" },
  { "numeric equality with a second comparison", [[{"x": [{"numeric": ["=", 1, "<", 2]}]}]],
    "numeric = takes no second comparison" },
  { "numeric with an empty range", [[{"x": [{"numeric": [">", 30, "<", 1]}]}]], "numeric range is empty" },
  { "numeric with a one-point open range", [[{"x": [{"numeric": [">", 1, "<", 1]}]}]], "numeric range is empty" },
  { "numeric beyond 5e9", [[{"x": [{"numeric": ["=", 2.0e10]}]}]], "between -5e9 and 5e9" },
  { "exists with a string", [[{"x": [{"exists": "badString"}]}]], "exists must be true or false at x" },
  { "exists with an extra key", [[{"x": [{"exists": true, "extraKey": "extraValue"}]}]], "exactly one operator" },
  { "a non-string cidr", [[{"ip": [{"cidr": 10}]}]], "cidr must be a string at ip" },
  { "a cidr without a mask", [[{"ip": [{"cidr": "10.0.0.0"}]}]], "needs exactly one '/'" },
  { "a cidr with two slashes", [[{"ip": [{"cidr": "foo/bar/baz"}]}]], "needs exactly one '/'" },
  { "a cidr with a non-numeric mask", [[{"ip": [{"cidr": "192.168.0.1/foo"}]}]], "mask bits must be a whole number" },
  { "a cidr with a negative mask", [[{"ip": [{"cidr": "192.168.0.1/-3424"}]}]], "mask bits must be a whole number" },
  { "an IPv4 cidr with 33 mask bits", [[{"ip": [{"cidr": "192.168.0.1/33"}]}]], "mask bits must be below 32" },
  { "an IPv6 cidr with 222 mask bits", [[{"ip": [{"cidr": "2400:6500:FF00::36FB:1F80/222"}]}]],
    "mask bits must be below 128" },
  { "a cidr whose address has five parts", [[{"ip": [{"cidr": "10.10.10.10.10/3"}]}]],
    "not an IPv4 or IPv6 address" },
  { "a cidr whose address part is above 255", [[{"ip": [{"cidr": "700.168.0.1/8"}]}]],
    "not an IPv4 or IPv6 address" },
  { "a cidr whose IPv6 address has too many groups",
    [[{"ip": [{"cidr": "2400:6500:3:3:3:3:3:3:3:3FF0::36FB:1F80/122"}]}]],
    "not an IPv4 or IPv6 address" },
  { "$or with one branch", [[{"$or": [{"metricType": ["MetricType"]}]}]],
    "$or must be an array of at least two objects at $or" },
  { "$or as a field holding an invalid object", [[{"$or": {"a": []}}]], "empty arrays are not allowed at $or.a" },
  { "$or holding a string", [[{"$or": [{"a": ["x"]}, "b"]}]], "$or must hold only objects at $or[2]" },
  { "$or holding an empty object", [[{"detail": {"$or": [{}, {"a": ["x"]}]}}]],
    "empty objects are not allowed at detail.$or[1]" },
  { "an operator name as a field inside $or", [[{"$or": [{"numeric": [123]}, {"prefix": ["abc"]}]}]],
    [["numeric" is an operator name]] },
  { "an error deep inside a $or branch names the branch",
    [[{"detail": {"$or": [{"a": ["x"]}, {"b": {"c": [{"prefix": 1}]}}]}}]], "at detail.$or[2].b.c" },
}

local function decode(text)
  return assert(json.decode(text))
end

describe("dynlog.pattern", function()
  describe("matches EventBridge's documented behaviour", function()
    for _, case in ipairs(CASES) do
      local name, pat, event, expected = case[1], case[2], case[3], case[4]
      it(name, function()
        local p, err = pattern.compile(pat)
        assert.is_nil(err)
        assert.are.equal(expected, p:match(decode(event)))
      end)
    end
  end)

  describe("refuses invalid patterns", function()
    for _, case in ipairs(INVALID) do
      local name, pat, words = case[1], case[2], case[3]
      it("refuses " .. name, function()
        local p, err = pattern.compile(pat)
        assert.is_nil(p)
        assert.is_true(errors.is(err))
        assert.are.equal("invalid_pattern", err.code)
        assert.is_truthy(err.message:find(words, 1, true), ("%q lacks %q"):format(err.message, words))
        assert.is_nil(err.message:find("\n"), "message is one line")
      end)
    end
  end)

  describe("API", function()
    it("compiles a Lua table shaped like decoded JSON, plain arrays included", function()
      local p = assert(pattern.compile({ source = { "aws.ec2" }, detail = { state = { { prefix = "term" } } } }))
      assert.is_true(p:match(decode(EC2)))
      assert.is_false(p:match({ source = "aws.ec2", detail = { state = "running" } }))
    end)

    it("matches events built by hand from plain Lua tables", function()
      local p = assert(pattern.compile([[{"resources": ["r2"], "detail": {"n": [{"numeric": [">", 1]}]}}]]))
      assert.is_true(p:match({ resources = { "r1", "r2" }, detail = { n = 2 } }))
      assert.is_false(p:match({ resources = { "r1" }, detail = { n = 2 } }))
    end)

    it("matches null in a hand-built event through json.null", function()
      local p = assert(pattern.compile({ detail = { responseElements = { json.null } } }))
      assert.is_true(p:match({ detail = { responseElements = json.null } }))
      assert.is_false(p:match({ detail = {} }))
    end)

    it("tells an empty Lua table in a leaf position apart by the JSON array mark", function()
      local _, err = pattern.compile({ source = json.array() })
      assert.matches("empty arrays are not allowed at source", err.message, 1, true)
      _, err = pattern.compile({ source = {} })
      assert.matches("empty objects are not allowed at source", err.message, 1, true)
    end)

    it("refuses tables that are neither arrays nor objects, and non-tables", function()
      local _, err = pattern.compile({ source = { "aws.ec2", x = 1 } })
      assert.matches("either an array or an object at source", err.message, 1, true)
      _, err = pattern.compile({ [true] = { "x" } })
      assert.matches("keys must be strings", err.message, 1, true)
      _, err = pattern.compile(42)
      assert.are.equal("invalid_pattern", err.code)
    end)

    it("refuses patterns nested deeper than 100 levels, cyclic tables included", function()
      local cyclic = {}
      cyclic.a = cyclic
      local _, err = pattern.compile(cyclic)
      assert.matches("deeper than 100 levels", err.message, 1, true)
      assert.is_truthy(pattern.compile(string.rep('{"a":', 99) .. '["x"]' .. string.rep("}", 99)))
    end)

    it("match() compiles and matches in one call, returning nil, err for a bad pattern", function()
      assert.is_true(pattern.match(EC2_TERMINATION, decode(EC2)))
      assert.is_false(pattern.match('{"source": ["aws.s3"]}', decode(EC2)))
      local ok, err = pattern.match('{"source": []}', decode(EC2))
      assert.is_nil(ok)
      assert.are.equal("invalid_pattern", err.code)
    end)

    it("accepts an already compiled pattern wherever a pattern is expected", function()
      local p = assert(pattern.compile(EC2_TERMINATION))
      assert.is_true(pattern.is(p))
      assert.is_false(pattern.is({}))
      assert.are.equal(p, pattern.compile(p))
      assert.is_true(pattern.match(p, decode(EC2)))
    end)

    it("raises when the event is not a table", function()
      local p = assert(pattern.compile(EC2_TERMINATION))
      assert.has_error(function() p:match("not an event") end)
    end)

    it("leaves the event untouched and gives the same answer every time", function()
      local p = assert(pattern.compile(
        [[{"detail": {"c-count": [{"exists": false}], "state": [{"anything-but": "x"}]}}]]))
      local event = decode(EC2)
      local before = json.encode(event)
      for _ = 1, 3 do assert.is_true(p:match(event)) end
      assert.are.equal(before, json.encode(event))
    end)

    it("relies on the two case forms of a character never being a prefix or a suffix of each other", function()
      -- The equals-ignore-case matchers take at most one form at each place.
      local unicase = require "dynlog.eventbridge.unicase"
      local function expand(runs, multi)
        local m = {}
        for i = 1, #runs, 4 do
          for cp = runs[i], runs[i + 1], runs[i + 2] do m[cp] = { cp + runs[i + 3] } end
        end
        for cp, list in pairs(multi) do m[cp] = list end
        return m
      end
      local function utf8(list)
        local out = {}
        for i, cp in ipairs(list) do
          assert(cp <= 0xFFFF)
          if cp < 0x80 then
            out[i] = string.char(cp)
          elseif cp < 0x800 then
            out[i] = string.char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64)
          else
            out[i] = string.char(0xE0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
          end
        end
        return table.concat(out)
      end
      local lower, upper = expand(unicase.lower, unicase.lower_multi), expand(unicase.upper, unicase.upper_multi)
      local checked = 0
      for cp = 0, 0xFFFF do
        local lo, up = lower[cp] or { cp }, upper[cp] or { cp }
        local a, b = utf8(lo), utf8(up)
        if a ~= b then
          checked = checked + 1
          local short, long = a, b
          if #a > #b then short, long = b, a end
          assert.are_not.equal(short, long:sub(1, #short), ("U+%04X"):format(cp))
          assert.are_not.equal(short, long:sub(-#short), ("U+%04X"):format(cp))
        end
      end
      assert.is_true(checked > 1400, "forms compared: " .. checked)
    end)

    it("creates no globals", function()
      local seen = {}
      for k in pairs(_G) do seen[k] = true end
      package.loaded["dynlog.pattern"] = nil
      local fresh = require "dynlog.pattern"
      package.loaded["dynlog.pattern"] = pattern
      assert.is_true(fresh.match(EC2_TERMINATION, decode(EC2)))
      for k in pairs(_G) do assert.is_true(seen[k], "new global " .. tostring(k)) end
    end)
  end)
end)

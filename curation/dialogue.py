"""Parse speaker-marked dialogue books into (question, answer) pairs.

The rules, in the order a reader would apply them:

1. Structure, never speech. Section headers (`Talk 435.`) start a new section
   and a new conversation; dates (`29th December, 1937`, also split over lines)
   are section metadata: a date applies to the sections that follow it. Running
   page headers (the book's title, repeated mid-sentence by PDF extraction),
   standalone page-number lines, standalone ALL-CAPS heading lines and footnote
   markers are noise. None of them ever appear in a turn.
2. Speaker markers: a label and a colon at the start of a line or after the end
   of a sentence: `D.:`/`M.:`, `Q:`/`A:`, `Q.:`, answerer names (`Maharshi:`,
   `Sri Bhagavan:`, `Bhagavan:`, `The Master:`), named visitors (`Mr. G. Duff:`,
   `Maj. Chadwick:`, `A visitor:`), and reported speech (`A visitor asked:`,
   `Sri Bhagavan said:`). A marker may stand on its own line, away from its
   speech. In the `qa` convention `Q.`/`A.` without a colon are markers too.
   `auto` picks the convention by counting which markers a book uses.
3. Roles: answerer names and answer labels (`M.`, `A.`) speak the answer;
   every other speaker speaks the question.
4. Turns: consecutive question turns (several questions before one answer)
   join into one human turn; consecutive answer turns join into one answer.
   A pair is emitted when a question turn is followed by an answer turn and
   then by anything that ends it (a new question, a section, the end).
5. Context: narrative text in a section before a question (and the lead-in
   sentence of reported speech, "A visitor asked:") is the pair's context.
6. Silence: a note like `(No answer.)` after a question is the answer: the
   pair is kept with answer "" and `is_silence` true.
7. Numbered references like `(63-4)` are taken out of turns into `refs`.
8. Not emitted, but counted in the report: answers with no question before
   them (the master speaking unprompted) and questions left without answer
   or silence at the end of a section.

Turn text is the turn's spans, each whitespace-collapsed, joined by one space;
quotation marks enclosing a whole turn are dropped from its span.
"""

//! Test documents shared by the rule sets' tests.

/// A normal multi-paragraph English news article (245 words, a title line, blank lines between
/// paragraphs). Every rule set must keep it with its published defaults.
pub(crate) const ARTICLE: &str = "\
Riverside Library Reopens After Two-Year Renovation

The Riverside Public Library reopened its doors on Saturday morning after a renovation that \
took more than two years and cost the city about $4.2 million. Hundreds of residents lined up \
before nine o'clock, and many of them brought children who had never seen the building open.

The original library was built in 1931, and its brick walls and tall arched windows have been \
kept. Inside, however, almost everything has changed. The old card catalogue has been replaced \
by a row of computers, the basement now holds a quiet study room, and a new glass reading room \
looks out over the river.

\"We wanted to keep the character of the place while making it useful for the next fifty \
years,\" said Maria Lopez, the architect who led the project. She explained that the team \
repaired the roof, added an elevator and improved the heating, which had failed during two of \
the last three winters.

Not everyone was pleased with the cost. Some members of the city council argued last year that \
the money should have gone to road repairs instead. The head librarian, Tom Becker, said he \
understood those concerns but pointed out that visits to the temporary branch had doubled \
since 2022.

The library will be open every day except Monday. Story time for young children starts again \
next week, and a small exhibition about the history of the building will run until the end of \
the summer.";

/// `n` plain English words (no punctuation, several stop words, mean length ~4.6).
pub(crate) fn words_doc(n: usize) -> String {
    const WORDS: [&str; 17] = [
        "the", "river", "flows", "past", "the", "old", "mill", "and", "into", "the", "valley",
        "of", "green", "fields", "with", "tall", "trees",
    ];
    (0..n)
        .map(|i| WORDS[i % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// A German news paragraph (same story as [`ARTICLE`]).
pub(crate) const GERMAN: &str = "\
Die Stadtbibliothek am Fluss hat am Samstagmorgen nach einer mehr als zweijährigen Renovierung \
wieder geöffnet. Hunderte Bürgerinnen und Bürger standen schon vor neun Uhr vor der Tür, und \
viele von ihnen brachten Kinder mit, die das Gebäude noch nie geöffnet gesehen hatten. Das \
ursprüngliche Gebäude wurde im Jahr 1931 errichtet, und seine Backsteinmauern und hohen \
Bogenfenster sind erhalten geblieben. Im Inneren hat sich jedoch fast alles verändert: Der alte \
Zettelkatalog wurde durch eine Reihe von Computern ersetzt, im Keller gibt es jetzt einen \
ruhigen Lernraum, und ein neuer Lesesaal aus Glas blickt auf den Fluss. Nicht alle waren mit \
den Kosten einverstanden, doch die Leiterin der Bibliothek sagte, die Besucherzahlen hätten \
sich seit dem vergangenen Jahr verdoppelt.";

/// A French news paragraph (same story as [`ARTICLE`]).
pub(crate) const FRENCH: &str = "\
La bibliothèque municipale du bord de la rivière a rouvert ses portes samedi matin, après des \
travaux de rénovation qui ont duré plus de deux ans. Des centaines d'habitants faisaient la \
queue avant neuf heures, et beaucoup d'entre eux étaient venus avec des enfants qui n'avaient \
jamais vu le bâtiment ouvert. La bibliothèque d'origine a été construite en 1931, et ses murs \
de brique ainsi que ses hautes fenêtres en arc ont été conservés. À l'intérieur, en revanche, \
presque tout a changé : l'ancien fichier a été remplacé par une rangée d'ordinateurs, le \
sous-sol accueille désormais une salle d'étude silencieuse, et une nouvelle salle de lecture \
vitrée donne sur la rivière. Tout le monde n'était pas satisfait du coût des travaux, mais la \
directrice a rappelé que la fréquentation avait doublé depuis l'année dernière.";

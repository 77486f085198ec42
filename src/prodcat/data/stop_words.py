"""Stop words a tokenizer can drop (`data.tokenizer.stop_words`).

`course`: NLTK's Spanish list (nltk.corpus.stopwords.words("spanish"), 313 words), which the
DiploDatos course removed from its titles; only its words of 3+ characters are listed, as the
course also dropped shorter tokens. Checked on meli-es-51k: with the course's tokenizer
settings, prodcat's tokens equal the course's `tokenized_title` on all 50,939 rows.
"""

COURSE = frozenset(
    """
que los del las por para con una como más pero sus este porque esta entre cuando muy sin
sobre también hasta hay donde quien desde todo nos durante todos uno les contra otros ese
eso ante ellos esto antes algunos qué unos otro otras otra tanto esa estos mucho quienes
nada muchos cual poco ella estar estas algunas algo nosotros mis tus ellas nosotras vosotros
vosotras mío mía míos mías tuyo tuya tuyos tuyas suyo suya suyos suyas nuestro nuestra
nuestros nuestras vuestro vuestra vuestros vuestras esos esas estoy estás está estamos
estáis están esté estés estemos estéis estén estaré estarás estará estaremos estaréis
estarán estaría estarías estaríamos estaríais estarían estaba estabas estábamos estabais
estaban estuve estuviste estuvo estuvimos estuvisteis estuvieron estuviera estuvieras
estuviéramos estuvierais estuvieran estuviese estuvieses estuviésemos estuvieseis estuviesen
estando estado estada estados estadas estad has hemos habéis han haya hayas hayamos hayáis
hayan habré habrás habrá habremos habréis habrán habría habrías habríamos habríais habrían
había habías habíamos habíais habían hube hubiste hubo hubimos hubisteis hubieron hubiera
hubieras hubiéramos hubierais hubieran hubiese hubieses hubiésemos hubieseis hubiesen
habiendo habido habida habidos habidas soy eres somos sois son sea seas seamos seáis sean
seré serás será seremos seréis serán sería serías seríamos seríais serían era eras éramos
erais eran fui fuiste fue fuimos fuisteis fueron fuera fueras fuéramos fuerais fueran fuese
fueses fuésemos fueseis fuesen sintiendo sentido sentida sentidos sentidas siente sentid
tengo tienes tiene tenemos tenéis tienen tenga tengas tengamos tengáis tengan tendré tendrás
tendrá tendremos tendréis tendrán tendría tendrías tendríamos tendríais tendrían tenía
tenías teníamos teníais tenían tuve tuviste tuvo tuvimos tuvisteis tuvieron tuviera tuvieras
tuviéramos tuvierais tuvieran tuviese tuvieses tuviésemos tuvieseis tuviesen teniendo tenido
tenida tenidos tenidas tened
""".split()
)

STOP_WORDS = {"none": frozenset(), "course": COURSE}

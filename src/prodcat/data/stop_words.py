"""Stop words a tokenizer can drop (`data.tokenizer.stop_words`): NLTK's lists, which the
DiploDatos course removed from the titles of each language. Only their words of 3+ characters
are listed, as the course also dropped shorter tokens.

`spanish` (`course` in configs written before the Portuguese list came): NLTK's Spanish list
(nltk.corpus.stopwords.words("spanish"), 313 words). Checked on meli-es-51k: with the course's
tokenizer settings, prodcat's tokens equal the course's `tokenized_title` on all 50,939 rows.

`portuguese`: NLTK's Portuguese list (nltk.corpus.stopwords.words("portuguese"): the Snowball
list with NLTK's most frequent verb forms first). The course's Portuguese files are not at
hand to check it against; tests/test_data_text_vocab.py checks it on the Portuguese rows of
meli-es-pt-1k.
"""

SPANISH = frozenset(
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

PORTUGUESE = frozenset(
    """
que para com não uma por mais dos como mas foi ele das tem seu sua ser quando muito nos está
também pelo pela até isso ela entre era depois sem mesmo aos ter seus quem nas esse eles
estão você tinha foram essa num nem suas meu minha têm numa pelos elas havia seja qual será
nós tenho lhe deles essas esses pelas este fosse dele vocês vos lhes meus minhas teu tua
teus tuas nosso nossa nossos nossas dela delas esta estes estas aquele aquela aqueles
aquelas isto aquilo estou estamos estive esteve estivemos estiveram estava estávamos estavam
estivera estivéramos esteja estejamos estejam estivesse estivéssemos estivessem estiver
estivermos estiverem hei havemos hão houve houvemos houveram houvera houvéramos haja hajamos
hajam houvesse houvéssemos houvessem houver houvermos houverem houverei houverá houveremos
houverão houveria houveríamos houveriam sou somos são éramos eram fui fomos fora fôramos
sejamos sejam fôssemos fossem for formos forem serei seremos serão seria seríamos seriam
temos tém tínhamos tinham tive teve tivemos tiveram tivera tivéramos tenha tenhamos tenham
tivesse tivéssemos tivessem tiver tivermos tiverem terei terá teremos terão teria teríamos
teriam
""".split()
)

STOP_WORDS = {
    "none": frozenset(),
    "spanish": SPANISH,
    "portuguese": PORTUGUESE,
    "course": SPANISH,
}

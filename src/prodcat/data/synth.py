"""Synthetic MercadoLibre-style product-title files for scale tests.

The real MercadoLibre Data Challenge 2019 ``train.csv`` has the header
``title,label_quality,language,category``: ~20 M short titles (≈ 8 words) written by
sellers in Spanish or Portuguese (50/50), 1,588 categories with a long-tailed size
distribution and a ``label_quality`` of ``reliable`` (≈ 6 %) or ``unreliable``.
:func:`write_synthetic_titles` writes files with the same shape, fast enough to make
20 M-row files for memory / throughput tests of the training pipeline.

Model of the data
-----------------
*Vocabulary* (built once per ``(seed, categories)``, cached):

* **Categories** are named like the real ones (``ELECTRIC_PRESSURE_WASHERS``): ~190
  base products (English name, Spanish and Portuguese head noun phrase) crossed with
  optional modifiers (``ELECTRIC``, ``PORTABLE``, ``KIDS`` ...).  Plain base products
  come first, then modifier combinations; past the ~2,700 combinations names get a
  numeric suffix.
* Every base product has **core words** (30–200): ~25 % real product words shared
  between products (``motor``, ``ruedas``/``rodas``, ``acero``/``aço`` ...) and the
  rest pseudo-words built from Spanish syllables, each with a Portuguese spelling
  (``-ción`` → ``-ção``, ``ñ`` → ``nh``, ``ll`` → ``lh``, ``-ble`` → ``-vel`` ...).
  A modifier category keeps ~70 % of its base product's core words and adds its own,
  so related categories are confusable, as in the real data.  Core words are picked
  with a skewed (Zipf-like) distribution.
* **Brands**: every base product has a few real brands (Samsung, Bosch, Tramontina ...)
  plus pseudo-brands of its own.
* **Shared words**: language-specific connectors (``de``, ``para``, ``con``/``com``,
  ``c/``, ``x``), generic words (``nuevo``/``novo``, ``original``, ``envío gratis``/
  ``frete grátis``, ``kit``, colours ...), title prefixes (``Kit``, ``Par De``,
  ``Juego De``/``Jogo De``) and numbers with units (``120``, ``1700w``, ``12 Kilos``,
  ``7,20 Metros``, ``30x40``, years).  The row's language picks the Spanish or
  Portuguese variant of every word.

*Rows* (fully vectorised, chunk by chunk):

* category: Zipf-like sizes, weight ∝ 1 / (rank + C/40) mixed with a round-robin
  that gives every 25th row to the next category, so every category has at least 4
  rows once ``rows >= 100 * categories``; the largest category is ~20–30× the median.
* language: 50/50 ``spanish``/``portuguese``; label_quality: 6 % ``reliable``.
* a title is 3–13 slots (≈ 8 words, never more than 15): a head noun phrase (or a
  prefix / number / brand followed by it), then core words, connectors, generic words,
  brands, numbers and *novel tokens*, joined by spaces and occasionally ``" - "``,
  ``", "``, ``" / "``, ``" + "`` or a double space.  Words with accents lose them
  in 35 % of uses.  Rows are Title Case (93 %), Sentence case, lower or UPPER.

*Vocabulary growth* (Heaps' law).  About 10 % of the slots after the head are novel
tokens: model codes (``Bd5298``, ``Umc22``), new pseudo-brands and typos of the
category's core words.  Each category ``c`` has its own stream of novel ids: when the
``t``-th novel slot of ``c`` is drawn, ``D(t) = min(t, floor(K * t**BETA))`` ids
exist; if ``D(t) > D(t-1)`` the slot gets the brand-new id ``D(t-1)``, otherwise it
reuses an existing id ``floor(D(t-1) * u**2)`` (old ids are more popular).  An id is
turned into its text by hashing ``(seed, c, id)``, so new tokens keep appearing all
through the file, are reproducible from the seed and do not depend on chunking.
With ``K = 3.2`` and ``BETA = 0.7`` the novel tokens alone grow like ``n**0.7``; on
top of the (saturating) static vocabulary of ~250 k lower-cased tokens this gives
≈ 0.3 M distinct lower-cased tokens (split on ``\\W+``) for 1 M rows and ≈ 2 M for
20 M rows; the overall fitted Heaps exponent between 1 M and 20 M rows is ≈ 0.6.

*Reproducibility*: the randomness of row block ``b`` (4,096 rows) comes from
``SeedSequence((seed, b))``; the same ``(seed, rows, categories)`` gives a
byte-identical file whatever ``chunk_rows`` is (it is rounded up to a multiple of
4,096).  Gzip output is written with ``mtime=0`` and no file name, so ``.gz`` files
are byte-identical too.
"""

from __future__ import annotations

import gzip
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

__all__ = ["COLUMNS", "write_synthetic_titles"]

COLUMNS = ("title", "label_quality", "language", "category")
LANGUAGES = ("spanish", "portuguese")
LABEL_QUALITIES = ("unreliable", "reliable")

BLOCK_ROWS = 4096  # rows drawn from one random stream; chunks are multiples of this
RELIABLE_SHARE = 0.06
MAX_WORDS = 15
HEAPS_K = 3.2  # novel ids of a category after t novel slots: min(t, K * t**BETA)
HEAPS_BETA = 0.7
ACCENT_DROP = 0.35  # share of uses of an accented word written without accents
ROUND_ROBIN_EVERY = 25  # every 25th row goes to the next category in turn
GZIP_LEVEL = 6

# Slot types.
_HEAD, _CORE, _CONN, _GEN, _BRAND, _NUM, _NOVEL, _PREFIX = range(8)
# (type, probability) for the first slot and for the others.
_FIRST_SLOT = ((_HEAD, 0.74), (_PREFIX, 0.10), (_NUM, 0.05), (_BRAND, 0.04), (_CORE, 0.07))
_OTHER_SLOT = (
    (_CORE, 0.40),
    (_CONN, 0.12),
    (_GEN, 0.14),
    (_BRAND, 0.09),
    (_NUM, 0.15),
    (_NOVEL, 0.10),
)
# Number of slots per title, 3..13.
_SLOT_PMF = (0.06, 0.09, 0.13, 0.17, 0.17, 0.14, 0.10, 0.07, 0.04, 0.02, 0.01)
_MIN_SLOTS = 3
# (separator, words it adds, probability) between slots, and after the last slot.
_SEPARATORS = (
    (" ", 0, 0.887),
    ("  ", 0, 0.02),
    (" - ", 1, 0.035),
    (", ", 0, 0.008),
    (" / ", 1, 0.03),
    (" + ", 1, 0.02),
)
_END_SEPARATORS = (("", 0, 0.97), (" ", 0, 0.03))
# Row case styles: title, sentence, lower, upper.
_CASE_PMF = (0.93, 0.04, 0.02, 0.01)

# --------------------------------------------------------------------------------------
# Word lists.  Pairs are "spanish:portuguese"; a single word is the same in both.

# English category name : Spanish head phrase : Portuguese head phrase.
_BASES = """
PRESSURE_WASHERS:hidrolavadora:lavadora de alta pressão|SOUND_CARDS:placa de sonido:placa de som
WASHING_MACHINES:lavarropas:máquina de lavar|BRAKE_DISCS:disco de freno:disco de freio
FALSE_EYELASHES:pestañas postizas:cílios postiços|SPRINKLERS:aspersor:aspersor
RACQUETS:raqueta:raquete|TRIPODS:trípode:tripé|AIR_FILTERS:filtro de aire:filtro de ar
LUNCHBOXES:lunchera:lancheira|AC_CONDENSERS:condensador:condensador
BILL_COUNTERS:contador de billetes:contador de cédulas|ESSENTIAL_OILS:aceite esencial:óleo essencial
WATER_PUMPS:bomba de agua:bomba d'água|ROUTERS:router:roteador|CAPS:gorra:boné
AIR_COMPRESSORS:compresor:compressor|TRAIN_CASES:valija organizadora:maleta organizadora
CHARGERS:cargador:carregador|SHELVES:estantería:estante|AIRBRUSHES:aerógrafo:aerógrafo
PUZZLES:rompecabezas:quebra-cabeça|NOTEBOOKS:notebook:notebook|PLAYARDS:corralito:cercadinho
CHAIRS:silla:cadeira|TABLES:mesa:mesa|BEDS:cama:cama|LAMPS:lámpara:luminária
SNEAKERS:zapatillas:tênis|T_SHIRTS:remera:camiseta|JACKETS:campera:jaqueta
WRISTWATCHES:reloj pulsera:relógio de pulso|HEADPHONES:auriculares:fone de ouvido
SPEAKERS:parlante:caixa de som|CELLPHONES:celular:celular|CELLPHONE_CASES:funda:capinha
TABLETS:tablet:tablet|MONITORS:monitor:monitor|KEYBOARDS:teclado:teclado|MICE:mouse:mouse
PRINTERS:impresora:impressora|CAMERAS:cámara:câmera|DRONES:drone:drone
TELEVISIONS:televisor:televisão|REFRIGERATORS:heladera:geladeira|MICROWAVES:microondas:micro-ondas
BLENDERS:licuadora:liquidificador|COFFEE_MAKERS:cafetera:cafeteira|FANS:ventilador:ventilador
AIR_CONDITIONERS:aire acondicionado:ar condicionado|HEATERS:estufa:aquecedor
DRILLS:taladro:furadeira|SAWS:sierra:serra|SCREWDRIVERS:destornillador:chave de fenda
WRENCHES:llave:chave|HAMMERS:martillo:martelo|TIRES:neumático:pneu|RIMS:llanta:roda
BATTERIES:batería:bateria|HEADLIGHTS:faro:farol|MIRRORS:espejo:espelho
SEAT_COVERS:funda de asiento:capa de banco|HELMETS:casco:capacete|GLOVES:guantes:luvas
BACKPACKS:mochila:mochila|HANDBAGS:cartera:bolsa|WALLETS:billetera:carteira
SUNGLASSES:anteojos de sol:óculos de sol|PERFUMES:perfume:perfume|SHAMPOOS:shampoo:xampu
HAIR_DRYERS:secador de pelo:secador de cabelo|HAIR_STRAIGHTENERS:planchita:chapinha
MAKEUP_BRUSHES:brochas de maquillaje:pincéis de maquiagem|LIPSTICKS:labial:batom
DOLLS:muñeca:boneca|TOY_CARS:autito:carrinho|BICYCLES:bicicleta:bicicleta
SKATEBOARDS:patineta:skate|BALLS:pelota:bola|TENTS:carpa:barraca|FISHING_REELS:reel:molinete
FISHING_RODS:caña de pescar:vara de pesca|KNIVES:cuchillo:faca|COOKING_POTS:olla:panela
FRYING_PANS:sartén:frigideira|DRINKING_GLASSES:vaso:copo|MUGS:taza:caneca|TOWELS:toalla:toalha
BED_SHEETS:sábanas:lençol|PILLOWS:almohada:travesseiro|CURTAINS:cortina:cortina
CARPETS:alfombra:tapete|SOFAS:sillón:sofá|DESKS:escritorio:escrivaninha
WARDROBES:placard:guarda-roupa|FAUCETS:grifería:torneira|SHOWERS:ducha:chuveiro
TOILETS:inodoro:vaso sanitário|DOORS:puerta:porta|DOOR_LOCKS:cerradura:fechadura
PAINTS:pintura:tinta|CABLES:cable:cabo|GUITARS:guitarra:guitarra|PIANOS:piano:piano
DRUMS:batería musical:bateria musical|MICROPHONES:micrófono:microfone
AMPLIFIERS:amplificador:amplificador|VIDEO_GAMES:juego:jogo|GAME_CONSOLES:consola:console
GAMEPADS:joystick:controle|BOOKS:libro:livro|PENS:lapicera:caneta|STICKERS:sticker:adesivo
PET_FOODS:alimento balanceado:ração|PET_COLLARS:collar para perro:coleira
AQUARIUMS:pecera:aquário|SUPPLEMENTS:suplemento:suplemento|PROTEINS:proteína:proteína
DUMBBELLS:mancuerna:halter|TREADMILLS:cinta de correr:esteira|ELLIPTICAL_MACHINES:elíptico:elíptico
SUITCASES:valija:mala|UMBRELLAS:paraguas:guarda-chuva|STROLLERS:cochecito:carrinho de bebê
DIAPERS:pañales:fraldas|BABY_BOTTLES:mamadera:mamadeira
SECURITY_CAMERAS:cámara de seguridad:câmera de segurança|ALARMS:alarma:alarme
SOLAR_PANELS:panel solar:painel solar|GENERATORS:generador:gerador
WELDING_MACHINES:soldadora:máquina de solda|GRILLS:parrilla:churrasqueira
POOLS:pileta:piscina|HAMMOCKS:hamaca:rede de descanso|SEEDS:semillas:sementes
LAWN_MOWERS:cortadora de césped:cortador de grama|CHAINSAWS:motosierra:motosserra
LADDERS:escalera:escada|MATTRESSES:colchón:colchão|SHORTS:short:bermuda|JEANS:jean:calça jeans
DRESSES:vestido:vestido|BRAS:corpiño:sutiã|SOCKS:medias:meias|BOOTS:botas:botas
SANDALS:sandalias:sandálias|RINGS:anillo:anel|EARRINGS:aros:brincos|NECKLACES:collar:colar
BRACELETS:pulsera:pulseira|MEMORY_CARDS:tarjeta de memoria:cartão de memória
USB_FLASH_DRIVES:pendrive:pendrive|HARD_DRIVES:disco rígido:hd externo
RAM_MEMORY_MODULES:memoria ram:memória ram|GRAPHICS_CARDS:placa de video:placa de vídeo
MOTHERBOARDS:placa madre:placa mãe|PROCESSORS:procesador:processador
POWER_SUPPLIES:fuente:fonte|MODEMS:modem:modem|PROJECTORS:proyector:projetor
REMOTE_CONTROLS:control remoto:controle remoto|SPARK_PLUGS:bujía:vela de ignição
SHOCK_ABSORBERS:amortiguador:amortecedor|CLUTCH_KITS:kit de embrague:kit de embreagem
RADIATORS:radiador:radiador|OIL_FILTERS:filtro de aceite:filtro de óleo
WIPER_BLADES:escobilla:palheta|STEERING_WHEELS:volante:volante|EXHAUSTS:escape:escapamento
SCALES:balanza:balança|THERMOMETERS:termómetro:termômetro
BLOOD_PRESSURE_MONITORS:tensiómetro:medidor de pressão|WHEELCHAIRS:silla de ruedas:cadeira de rodas
MASSAGERS:masajeador:massageador|COSTUMES:disfraz:fantasia|BALLOONS:globos:balões
CANDLES:velas:velas|PICTURE_FRAMES:portarretrato:porta-retrato
WALL_CLOCKS:reloj de pared:relógio de parede
VASES:florero:vaso de flores|SEWING_MACHINES:máquina de coser:máquina de costura
FABRICS:tela:tecido|KNITTING_YARNS:lana:lã|BRAKE_PADS:pastillas de freno:pastilha de freio
BALL_JOINTS:rótula:pivô|STATUES:estatua:estátua|PLACEMATS:individual:jogo americano
ALARM_CLOCKS:despertador:despertador|HEADLAMPS:linterna de cabeza:lanterna de cabeça
CHRISTMAS_TREES:árbol de navidad:árvore de natal|SIDE_TABLES:mesa auxiliar:mesa lateral
BOUNCE_HOUSES:castillo inflable:pula-pula|TOBACCO_PIPES:pipa:cachimbo|COOKTOPS:anafe:cooktop
OVENS:horno:forno|KITCHEN_SINKS:bacha:cuba|DISHWASHERS:lavavajillas:lava-louças
VACUUM_CLEANERS:aspiradora:aspirador de pó|IRONS:plancha:ferro de passar
TOASTERS:tostadora:torradeira|MIXERS:batidora:batedeira
FOOD_PROCESSORS:procesadora:processador de alimentos
WATER_FILTERS:filtro de agua:filtro de água|THERMOS:termo:garrafa térmica|MATE_GOURDS:mate:cuia
WINE_CELLARS:cava de vino:adega|WINES:vino:vinho|BEERS:cerveza:cerveja
COFFEE_BEANS:café en grano:café em grão|TEAS:té:chá|SPICES:especias:temperos
"""

_MODIFIERS = """
ELECTRIC:eléctrico:elétrico|PORTABLE:portátil:portátil|KIDS:infantil:infantil
PROFESSIONAL:profesional:profissional|CAR:para auto:automotivo|MOTORCYCLE:para moto:para moto
GAMING:gamer:gamer|WIRELESS:inalámbrico:sem fio|OUTDOOR:exterior:externo|DIGITAL:digital:digital
VINTAGE:vintage:vintage|INDUSTRIAL:industrial:industrial|MINI:mini:mini|SMART:inteligente:inteligente
"""

_FEATURES = """
motor|bomba|filtro|cable:cabo|pantalla:tela|soporte:suporte|caja:caixa|bolsa|manguera:mangueira
disco|freno:freio|repuesto:reposição|pieza:peça|base|hoja:folha|cuchilla:lâmina|batería:bateria
control:controle|sensor|luz|panel:painel|placa|tornillo:parafuso|tuerca:porca|resorte:mola
bisagra:dobradiça|manija:alça|correa:correia|cadena:corrente|tubo|válvula|llave:chave|botón:botão
interruptor|enchufe:tomada|adaptador|conector|antena|lente|vidrio:vidro|marco:moldura|tapa:tampa
estuche:estojo|cierre:zíper|bolsillo:bolso|cuello:gola|suela:sola|cordón:cadarço|algodón:algodão
lycra|seda|cuero:couro|gamuza:camurça|goma:borracha|silicona:silicone|acrílico|mdf|pino:pinus
roble:carvalho|cromado|inox|hierro:ferro|bronce:bronze|cobre|oro:ouro|plata:prata|cristal
madera:madeira|acero:aço|aluminio:alumínio|plástico|reforzado:reforçado|ajustable:ajustável
plegable:dobrável|lavable:lavável|impermeable:impermeável|resistente|liviano:leve|pesado
compacto|silencioso|potente|rápido|suave|térmico|antideslizante:antiderrapante|magnético
transparente|estampado|liso|bordado|decorativo|moderno|clásico:clássico|retro|rústico
unisex:unissex|dama:feminino|caballero:masculino|trasero:traseiro|delantero:dianteiro
izquierdo:esquerdo|derecho:direito|superior|inferior|interno|externo|triple:triplo
simple:simples|ruedas:rodas|rueda:roda|puerta:porta|mesa|silla:cadeira|agua:água|aire:ar
aceite:óleo|gas:gás|vapor|calor|frío:frio|eléctrico:elétrico|manual|automático|inverter
táctil:touch|recargable:recarregável|inalámbrico:sem fio|bluetooth|wifi|usb|hdmi|led|lcd
turbo|nano|extra|medio:médio|largo:comprido|corto:curto|alto|bajo:baixo|ancho:largo
redondo|cuadrado:quadrado|rectangular:retangular|bebé:bebê|niños:crianças|hogar:casa
jardín:jardim|cocina:cozinha|baño:banheiro|oficina:escritório|camping|viaje:viagem
"""

_GENERIC = """
original|nuevo:novo|nueva:nova|oferta:promoção|envío gratis:frete grátis|kit|pack|combo
negro:preto|blanco:branco|calidad:qualidade|premium|importado|garantía:garantia|set:conjunto
juego:jogo|unidades|hombre:masculino|mujer:feminina|azul|rojo:vermelho|gris:cinza|rosa
verde|super|pro|plus|max|mini|full|hd|profesional:profissional|portátil|digital
excelente|nuevos:novos|envío:envio|gratis:grátis|cuotas:parcelas|sin interés:sem juros
promo:promoção|liquidación:liquidação|usado|modelo|tipo|color:cor|colores:cores|talle:tamanho
amarillo:amarelo|violeta:roxo|naranja:laranja|marrón:marrom|plateado:prateado|dorado:dourado
beige:bege|celeste:azul claro|universal|completo|accesorio:acessório|repuesto:peça
alta potencia:alta potência|calidad premium:qualidade premium|entrega inmediata:pronta entrega
mayorista:atacado|por mayor:atacado|local:loja|stock:estoque|caba:sp|nf|factura:nota fiscal
regalo:brinde|ahora:agora|ya:já|únicos:únicos|imperdible:imperdível|barato|importada|nueva!:nova!
"""

_CONNECTORS = """
de|para|con:com|y:e|x|c/|p/|en:em|del:do|la:a|el:o|sin:sem|a|al:ao|s/|por|o:ou|p/ auto:p/ carro
"""

_PREFIXES = """
kit|combo|par de|juego de:jogo de|set de:conjunto de|pack|x2|2|4|oferta:promoção|nuevo:novo
mini|super|repuesto:refil|lote de|caja de:caixa de
"""

_BRANDS = """
samsung philips sony lg motorola xiaomi apple bosch makita dewalt stanley tramontina electrolux
brastemp mondial britânia arno oster atma peabody liliana whirlpool nike adidas puma fila topper
olympikus mizuno reebok ford fiat chevrolet vw renault peugeot toyota honda yamaha suzuki citroen
nissan hp dell lenovo asus acer intel amd nvidia kingston sandisk seagate logitech genius
multilaser positivo nikon canon gopro jbl pioneer panasonic philco noblex bgh tcl hisense aoc
tp-link huawei nokia alcatel karcher lavor behringer fremax mattel lego hasbro disney marvel
barbie fisher-price chicco graco pampers huggies natura avon loreal maybelline nivea dove
gillette braun remington gama wahl tupperware bic faber-castell havaianas crocs vans converse
ray-ban oakley casio tommy lacoste levis swarovski pandora vonder tekbond 3m wd-40 castrol
mobil shell bridgestone pirelli michelin goodyear fate moura heliar osram cree sylvania ge
taramps stetsom gradiente intelbras hikvision dahua garmin fitbit amazfit bose beats
sennheiser shure roland fender gibson ibanez giannini tagima shimano caloi trek specialized
everlast speedo coleman nautika ntk quechua wilson babolat head penn spalding penalty umbro
kappa cofap monroe valeo mahle fram tecfil nakata skf ngk denso gamo brother singer jp
"""

_SYLLABLES = (
    "ca co cu ta te ti to ma me mi mo pa pe pi po ra re ri ro la le li lo lu sa se si so "
    "na ne ni no da de di do ba be bo bu ga go fa fe fi fo va ve vi ja jo ci ce "
    "bra bre tra tre tro pre pro pla cla cle gra gre tri fra fle cri dro "
    "car cor tor man mon sal ver len ños lla llo ña que gui cha chi ques tas mar"
).split()
_ENDINGS = (
    "dor dora ción ero era ble illa ito ado ada ante al ura ista or ón ina azo dad ente "
    "eta ero ismo ivo iva"
).split()
_BRAND_SYLLABLES = (
    "lav or max ton ex vol tek fre mon dom bel rin ker zon tri sta cor ran vex tal kor lux "
    "mar tix gal pro fle nor sen vit dax ryo quan ber zet ola ami ka ko ri ta na vo la mi"
).split()
_BRAND_ENDINGS = "x tech max on ex ia ar is plus ia ol ium".split()
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"

_UNITS_ATTACHED = (
    ("w", 6),
    ("v", 5),
    ("mm", 5),
    ("cm", 5),
    ("m", 3),
    ("kg", 4),
    ("g", 2),
    ("ml", 3),
    ("l", 2),
    ("gb", 4),
    ("tb", 1),
    ("mah", 2),
    ("hp", 2),
    ("cc", 1),
    ("mp", 1),
    ("k", 1),
    ("hz", 1),
    ("btu", 1),
    ("mts", 2),
    ("lts", 2),
    ("a", 1),
    ("x", 2),
)
_UNIT_WORDS_ES = (
    ("kilos", 3),
    ("litros", 3),
    ("metros", 3),
    ("bar", 1),
    ("volts", 1),
    ("watts", 1),
    ("pulgadas", 2),
    ("unidades", 3),
    ("piezas", 2),
    ("cm", 4),
    ("mm", 3),
    ("kg", 3),
    ("lts", 2),
    ("mts", 2),
    ("gb", 2),
    ("hp", 1),
    ("pares", 1),
    ("cuotas", 1),
)
_UNIT_WORDS_PT = (
    ("quilos", 3),
    ("litros", 3),
    ("metros", 3),
    ("bar", 1),
    ("volts", 1),
    ("watts", 1),
    ("polegadas", 2),
    ("unidades", 3),
    ("peças", 2),
    ("cm", 4),
    ("mm", 3),
    ("kg", 3),
    ("lts", 2),
    ("mts", 2),
    ("gb", 2),
    ("hp", 1),
    ("pares", 1),
    ("vezes", 1),
)

_ACCENT_FOLD = str.maketrans("áéíóúâêôãõçñüà", "aeiouaeoaocnua")
_ACCENTED = {"a": "á", "e": "é", "i": "í", "o": "ó", "u": "ú"}
_TOKEN_SPLIT = re.compile(r"\W+")


def _pairs(text: str, sep: str = "|") -> list[tuple[str, str]]:
    """Parse ``es:pt|word|...`` lists into (spanish, portuguese) pairs."""
    out = []
    for item in text.replace("\n", sep).split(sep):
        item = item.strip()
        if not item:
            continue
        es, _, pt = item.partition(":")
        out.append((es.strip(), (pt or es).strip()))
    return out


def _triples(text: str) -> list[tuple[str, str, str]]:
    out = []
    for item in text.replace("\n", "|").split("|"):
        if item.strip():
            en, es, pt = (part.strip() for part in item.split(":"))
            out.append((en, es, pt))
    return out


def _to_portuguese(word: str) -> str:
    """Portuguese-looking spelling of a Spanish(-like) word."""
    w = word.replace("ciones", "ções").replace("ción", "ção").replace("ñ", "nh")
    w = w.replace("ll", "lh")
    w = re.sub(r"(?<![qg])ue", "o", w)
    w = re.sub(r"(?<![qg])ie", "e", w)
    for es, pt in (
        ("dad", "dade"),
        ("ble", "vel"),
        ("ero", "eiro"),
        ("era", "eira"),
        ("ón", "ão"),
        ("azo", "aço"),
        ("z", "s"),
    ):
        if w.endswith(es):
            w = w[: -len(es)] + pt
            break
    return w


def _agree(modifier: str, head: str) -> str:
    """Crude Spanish/Portuguese gender and number agreement of a modifier."""
    first = head.split(" ")[0]
    if modifier.endswith("o") and " " not in modifier:
        if first.endswith("as"):
            return modifier[:-1] + "as"
        if first.endswith("os") or first.endswith("es"):
            return modifier + "s"
        if first.endswith("a") or first.endswith("ção") or first.endswith("ión"):
            return modifier[:-1] + "a"
    return modifier


def _title_case(text: str) -> str:
    return " ".join(w[:1].upper() + w[1:] for w in text.split(" "))


def _weights_cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    return cdf / cdf[-1]


class _PoolBuilder:
    """Interns lower-case strings and lays them out in one byte pool."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.items: list[str] = []

    def add(self, text: str) -> int:
        found = self.ids.get(text)
        if found is None:
            found = self.ids[text] = len(self.items)
            self.items.append(text)
        return found

    def add_folded(self, text: str) -> tuple[int, int]:
        """Add a word and its accent-free variant; return both ids."""
        return self.add(text), self.add(text.translate(_ACCENT_FOLD))


@dataclass(frozen=True)
class _Vocab:
    """Static vocabulary and sampling tables (see the module docstring)."""

    pool: np.ndarray  # uint8: lower | title | upper variants of all entries
    pool_size: int  # bytes of one variant
    off: np.ndarray  # int64 start of each entry in the lower variant
    length: np.ndarray  # int32 byte length of each entry
    words: np.ndarray  # int8 whitespace-separated words of each entry
    folded: np.ndarray  # int32 id of the accent-free variant (itself when ASCII)
    atom_ptr: np.ndarray  # CSR: lower-cased \W+ tokens of each entry
    atom_ids: np.ndarray
    n_atoms: int
    sep_ids: np.ndarray  # separator entries, in _SEPARATORS order
    sep_words: np.ndarray
    sep_cdf: np.ndarray
    end_sep_ids: np.ndarray
    end_sep_cdf: np.ndarray
    # Language-specific tables: cdf over [0, 1) for spanish and [1, 2) for portuguese.
    conn_cdf: np.ndarray
    conn_ids: np.ndarray
    gen_cdf: np.ndarray
    gen_ids: np.ndarray
    pre_cdf: np.ndarray
    pre_ids: np.ndarray
    num_cdf: np.ndarray
    num_ids: np.ndarray
    # Categories.
    names: list[str]
    head_ids: np.ndarray  # (2, C)
    core_ptr: np.ndarray  # (C + 1,)
    core_ids: np.ndarray  # (2, total)
    core_ascii: np.ndarray  # (total,) accent-free spanish variant, for typos
    brand_ptr: np.ndarray
    brand_ids: np.ndarray
    cat_cdf: np.ndarray  # over Zipf ranks
    rank_to_cat: np.ndarray
    round_robin: np.ndarray  # category order of the round-robin rows
    # Pieces of novel tokens.
    letter_ids: np.ndarray
    digit_ids: np.ndarray
    syllable_ids: np.ndarray
    brand_ending_ids: np.ndarray


def _pseudo_words(
    rng: np.random.Generator,
    n: int,
    syllables: list[str],
    endings: list[str],
    ending_p: float,
    accent_p: float,
    max_syllables: int = 3,
) -> list[str]:
    k = rng.integers(2, max_syllables + 1, n)
    picks = rng.integers(0, len(syllables), (n, max_syllables))
    has_end = rng.random(n) < ending_p
    end = rng.integers(0, len(endings), n)
    accent = rng.random(n) < accent_p
    out = []
    for i in range(n):
        w = "".join(syllables[j] for j in picks[i, : k[i]])
        if has_end[i]:
            w += endings[end[i]]
        if accent[i] and not any(ch in w for ch in "áéíóúñ"):
            vowels = [p for p, ch in enumerate(w) if ch in _ACCENTED]
            if len(vowels) >= 2:
                p = vowels[-2]
                w = w[:p] + _ACCENTED[w[p]] + w[p + 1 :]
        out.append(w)
    return out


def _numbers(lang: int) -> tuple[list[str], np.ndarray]:
    """Number phrases (``120``, ``1700w``, ``12 Kilos``, ``7,20 Metros``) with weights."""
    nums: list[tuple[str, float]] = []
    for i in range(1, 13):
        nums.append((str(i), 8.0 / i**0.5))
    for i in range(13, 101):
        nums.append((str(i), 2.0 / (i**0.7) * (4 if i % 10 == 0 else 1)))
    for i in (
        110,
        120,
        127,
        150,
        180,
        200,
        220,
        250,
        300,
        350,
        400,
        450,
        500,
        600,
        700,
        750,
        800,
        900,
        1000,
        1200,
        1500,
        1700,
        1800,
        2000,
        2400,
        2500,
        3000,
        3500,
        4000,
        5000,
        6000,
        9000,
        10000,
        12000,
        13000,
        20000,
    ):
        nums.append((str(i), 0.6))
    for year in range(1968, 2020):
        nums.append((str(year), 0.03 * (1 + (year >= 2000) * 3)))
    for d in (
        "0.3",
        "0.5",
        "1.5",
        "1.6",
        "1.8",
        "2.0",
        "2.5",
        "3.5",
        "5.5",
        "1,20",
        "2,5",
        "7,20",
        "1,5",
        "0,5",
        "3,5",
        "1.0",
        "1.4",
        "2.2",
        "4,5",
        "12,5",
    ):
        nums.append((d, 0.25))
    unit_words = _UNIT_WORDS_ES if lang == 0 else _UNIT_WORDS_PT
    out: list[tuple[str, float]] = []
    for n, w in nums:
        out.append((n, w))
        for u, uw in _UNITS_ATTACHED:
            out.append((n + u, w * uw * 0.02))
        for u, uw in unit_words:
            out.append((n + " " + u, w * uw * 0.012))
    for a in (10, 12, 15, 20, 25, 30, 40, 50, 60, 70, 80, 100, 120, 150, 200):
        for b in (10, 15, 20, 30, 40, 50, 60, 80, 100, 120, 150, 200):
            out.append((f"{a}x{b}", 0.02))
    for frac in ("1/2", "3/4", "1/4", "2x1", "3x1", "08/", "2.0 16v", "1.6 8v", "8v", "16v"):
        out.append((frac, 0.1))
    texts = [t for t, _ in out]
    return texts, np.array([w for _, w in out])


@lru_cache(maxsize=4)
def _build_vocab(seed: int, categories: int) -> _Vocab:
    rng = np.random.default_rng([seed, 0x5EED, categories])
    pb = _PoolBuilder()

    def lang_table(items: list[tuple[str, str]], weights: np.ndarray, fold: bool = True):
        ids = np.empty((2, len(items)), dtype=np.int32)
        for k, pair in enumerate(items):
            for lang in (0, 1):
                ids[lang, k] = pb.add(pair[lang])
                if fold:
                    pb.add(pair[lang].translate(_ACCENT_FOLD))
        cdf = _weights_cdf(weights)
        return np.concatenate([cdf, cdf + 1.0]), ids.reshape(-1)

    def zipf_weights(n: int, a: float = 0.9, shift: float = 2.0) -> np.ndarray:
        return 1.0 / (np.arange(n) + shift) ** a

    sep_ids = np.array([pb.add(s) for s, _, _ in _SEPARATORS], dtype=np.int32)
    end_sep_ids = np.array([pb.add(s) for s, _, _ in _END_SEPARATORS], dtype=np.int32)

    conn = _pairs(_CONNECTORS)
    conn_w = zipf_weights(len(conn), 1.1, 1.0)
    conn_cdf, conn_ids = lang_table(conn, conn_w)
    gen = _pairs(_GENERIC)
    gen_cdf, gen_ids = lang_table(gen, zipf_weights(len(gen), 0.8, 3.0))
    pre = _pairs(_PREFIXES)
    pre_cdf, pre_ids = lang_table(pre, zipf_weights(len(pre), 1.0, 1.0))

    num_cdfs, num_ids = [], []
    for lang in (0, 1):
        texts, w = _numbers(lang)
        num_cdfs.append(_weights_cdf(w) + lang)
        num_ids.append(np.array([pb.add(t) for t in texts], dtype=np.int32))
    # Both languages' number tables have the same length by construction.
    num_cdf = np.concatenate(num_cdfs)
    num_ids_arr = np.concatenate(num_ids)

    letter_ids = np.array([pb.add(ch) for ch in _LETTERS], dtype=np.int32)
    digit_ids = np.array([pb.add(ch) for ch in _DIGITS], dtype=np.int32)
    syllable_ids = np.array([pb.add(s) for s in _BRAND_SYLLABLES], dtype=np.int32)
    brand_ending_ids = np.array([pb.add(s) for s in _BRAND_ENDINGS], dtype=np.int32)

    # ---- categories -----------------------------------------------------------------
    bases = _triples(_BASES)
    mods = _triples(_MODIFIERS)
    base_order = rng.permutation(len(bases))
    combos = [(int(b), -1) for b in base_order]
    extra = [(b, m) for b in range(len(bases)) for m in range(len(mods))]
    combos += [extra[i] for i in rng.permutation(len(extra))]
    if categories > len(combos):
        combos += [combos[i % len(combos)] for i in range(len(combos), categories)]
    combos = combos[:categories]

    features = _pairs(_FEATURES)
    feature_w = zipf_weights(len(features), 0.6, 5.0)
    feature_w /= feature_w.sum()
    real_brands = list(dict.fromkeys(_BRANDS.split()))
    real_brand_w = zipf_weights(len(real_brands), 0.8, 3.0)
    real_brand_w /= real_brand_w.sum()

    used_bases = sorted({b for b, _ in combos})
    base_core: dict[int, list[tuple[str, str]]] = {}
    base_brands: dict[int, list[str]] = {}
    for b in used_bases:
        n_core = int(np.clip(round(np.exp(rng.normal(np.log(75), 0.45))), 30, 160))
        n_feat = int(round(n_core * rng.uniform(0.15, 0.35)))
        feats = rng.choice(len(features), size=n_feat, replace=False, p=feature_w)
        words = [features[i] for i in feats]
        pseudo = _pseudo_words(rng, n_core - n_feat, _SYLLABLES, _ENDINGS, 0.45, 0.12)
        words += [(w, _to_portuguese(w)) for w in pseudo]
        base_core[b] = [words[i] for i in rng.permutation(len(words))]
        n_real = int(rng.integers(3, 11))
        brands = [
            real_brands[i]
            for i in rng.choice(len(real_brands), size=n_real, replace=False, p=real_brand_w)
        ]
        brands += _pseudo_words(
            rng, int(rng.integers(3, 13)), _BRAND_SYLLABLES, _BRAND_ENDINGS, 0.3, 0.0
        )
        base_brands[b] = [brands[i] for i in rng.permutation(len(brands))]

    names: list[str] = []
    seen: dict[str, int] = {}
    head_ids = np.empty((2, categories), dtype=np.int32)
    core_lists: list[list[tuple[str, str]]] = []
    brand_lists: list[list[str]] = []
    for c, (b, m) in enumerate(combos):
        en, es, pt = bases[b]
        core = base_core[b]
        brands = base_brands[b]
        if m >= 0:
            men, mes, mpt = mods[m]
            en = f"{men}_{en}"
            es = f"{es} {_agree(mes, es)}"
            pt = f"{pt} {_agree(mpt, pt)}"
            keep = rng.random(len(core)) < 0.7
            own = _pseudo_words(rng, int(rng.integers(10, 41)), _SYLLABLES, _ENDINGS, 0.45, 0.12)
            core = [w for w, k in zip(core, keep, strict=True) if k]
            core += [(w, _to_portuguese(w)) for w in own]
            core += [(mes, mpt)]
            core = [core[i] for i in rng.permutation(len(core))][:200]
            brands = brands + _pseudo_words(
                rng, int(rng.integers(1, 6)), _BRAND_SYLLABLES, _BRAND_ENDINGS, 0.3, 0.0
            )
        if en in seen:
            seen[en] += 1
            en = f"{en}_{seen[en]}"
        else:
            seen[en] = 1
        names.append(en)
        head_ids[0, c], _ = pb.add_folded(es)
        head_ids[1, c], _ = pb.add_folded(pt)
        core_lists.append(core)
        brand_lists.append(brands)

    core_ptr = np.zeros(categories + 1, dtype=np.int64)
    core_ptr[1:] = np.cumsum([len(cl) for cl in core_lists])
    core_ids = np.empty((2, int(core_ptr[-1])), dtype=np.int32)
    core_ascii = np.empty(int(core_ptr[-1]), dtype=np.int32)
    k = 0
    for cl in core_lists:
        for es, pt in cl:
            core_ids[0, k], _ = pb.add_folded(es)
            core_ascii[k] = pb.add(es.translate(_ACCENT_FOLD).split(" ")[-1])
            core_ids[1, k], _ = pb.add_folded(pt)
            k += 1
    brand_ptr = np.zeros(categories + 1, dtype=np.int64)
    brand_ptr[1:] = np.cumsum([len(bl) for bl in brand_lists])
    brand_ids = np.array([pb.add(x) for bl in brand_lists for x in bl], dtype=np.int32)

    ranks = np.arange(categories, dtype=np.float64)
    cat_cdf = _weights_cdf(1.0 / (ranks + max(1.0, categories / 40.0)))
    rank_to_cat = rng.permutation(categories).astype(np.int32)
    round_robin = rng.permutation(categories).astype(np.int32)

    # ---- byte pool ------------------------------------------------------------------
    items = pb.items
    lower = [s.encode() for s in items]
    title = [_title_case(s).encode() for s in items]
    upper = [s.upper().encode() for s in items]
    for variant in (title, upper):  # keep byte offsets aligned across variants
        for i, (lo, v) in enumerate(zip(lower, variant, strict=True)):
            if len(v) != len(lo):
                variant[i] = lo
    length = np.array([len(b) for b in lower], dtype=np.int32)
    off = np.zeros(len(items), dtype=np.int64)
    off[1:] = np.cumsum(length)[:-1]
    blob = b"".join(lower) + b"".join(title) + b"".join(upper)
    pool = np.frombuffer(blob, dtype=np.uint8)
    words = np.array([max(1, len(s.split())) if s.strip() else 0 for s in items], dtype=np.int8)
    folded = np.array(
        [pb.ids.get(s.translate(_ACCENT_FOLD), i) for i, s in enumerate(items)], dtype=np.int32
    )
    atom_index: dict[str, int] = {}
    atom_lists = [
        [atom_index.setdefault(a, len(atom_index)) for a in _TOKEN_SPLIT.split(s.lower()) if a]
        for s in items
    ]
    atom_ptr = np.zeros(len(items) + 1, dtype=np.int64)
    atom_ptr[1:] = np.cumsum([len(a) for a in atom_lists])
    atom_ids = np.array([a for al in atom_lists for a in al], dtype=np.int32)

    return _Vocab(
        pool=pool,
        pool_size=int(length.sum()),
        off=off,
        length=length,
        words=words,
        folded=folded,
        atom_ptr=atom_ptr,
        atom_ids=atom_ids,
        n_atoms=len(atom_index),
        sep_ids=sep_ids,
        sep_words=np.array([w for _, w, _ in _SEPARATORS], dtype=np.int8),
        sep_cdf=_weights_cdf([p for _, _, p in _SEPARATORS]),
        end_sep_ids=end_sep_ids,
        end_sep_cdf=_weights_cdf([p for _, _, p in _END_SEPARATORS]),
        conn_cdf=conn_cdf,
        conn_ids=conn_ids,
        gen_cdf=gen_cdf,
        gen_ids=gen_ids,
        pre_cdf=pre_cdf,
        pre_ids=pre_ids,
        num_cdf=num_cdf,
        num_ids=num_ids_arr,
        names=names,
        head_ids=head_ids,
        core_ptr=core_ptr,
        core_ids=core_ids,
        core_ascii=core_ascii,
        brand_ptr=brand_ptr,
        brand_ids=brand_ids,
        cat_cdf=cat_cdf,
        rank_to_cat=rank_to_cat,
        round_robin=round_robin,
        letter_ids=letter_ids,
        digit_ids=digit_ids,
        syllable_ids=syllable_ids,
        brand_ending_ids=brand_ending_ids,
    )


# --------------------------------------------------------------------------------------
# Vectorised helpers.

_U64 = np.uint64
_INV32 = 1.0 / 2**32
_INV16 = 1.0 / 2**16


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, element-wise on uint64 arrays (wrapping arithmetic)."""
    z = x + _U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


def _gather(pool: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate ``pool[s:s + n]`` for every (s, n) pair, without a Python loop."""
    lengths = lengths.astype(np.int64, copy=False)
    out_start = np.cumsum(lengths) - lengths
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=pool.dtype)
    delta = (starts - out_start).astype(np.int32 if pool.size < 2**31 else np.int64)
    idx = np.repeat(delta, lengths)
    idx += np.arange(total, dtype=idx.dtype)
    return pool[idx]


def _case_variants(lower: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """ASCII lower | Title | UPPER variants of a pool of lower-case ASCII strings."""
    is_lower = (lower >= 97) & (lower <= 122)
    upper = np.where(is_lower, lower - 32, lower).astype(np.uint8)
    title = lower.copy()
    if starts.size:
        title[starts] = upper[starts]
    return np.concatenate([lower, title, upper])


@dataclass
class _State:
    """What carries over from one chunk to the next."""

    novel_seen: np.ndarray  # novel slots drawn so far, per category
    cat_rows: np.ndarray  # rows written so far, per category
    used: np.ndarray  # static entries used so far


def _heaps_d(t: np.ndarray) -> np.ndarray:
    """Distinct novel ids of a category after ``t`` novel slots."""
    return np.minimum(t, np.floor(HEAPS_K * t**HEAPS_BETA))


def _novel_strings(
    v: _Vocab, seed: int, cats: np.ndarray, ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Text of novel tokens ``(category, id)``: model codes, pseudo-brands and typos.

    Returns the lower | title | upper byte pool and each token's start and length in the
    lower part.
    """
    m = cats.size
    key = (_U64(seed & 0xFFFFFFFF) << _U64(48)) ^ (cats.astype(_U64) << _U64(28)) ^ ids
    h1 = _splitmix64(key)
    h2 = _splitmix64(h1 ^ _U64(0xD1B54A32D192ED03))
    h3 = _splitmix64(h2 ^ _U64(0x8CB92BA72F3D8DD7))
    kind = (h1 % _U64(100)).astype(np.int64)
    width = 9
    seg_start = np.zeros((m, width), dtype=np.int64)
    seg_len = np.zeros((m, width), dtype=np.int64)
    off, length = v.off, v.length

    # Model codes (45 %): 1-3 letters, 2-5 digits, sometimes a trailing letter.
    model = kind < 45
    nl = (
        np.searchsorted(
            [0.3, 0.8], ((h1 >> _U64(8)) % _U64(100)).astype(np.float64) / 100, side="right"
        )
        + 1
    )
    nd = ((h1 >> _U64(16)) % _U64(4)).astype(np.int64) + 2
    tail = ((h1 >> _U64(20)) % _U64(5)) == 0
    cols = np.arange(width)
    letters = v.letter_ids[
        ((h2[:, None] >> (_U64(5) * cols.astype(_U64))) % _U64(26)).astype(np.int64)
    ]
    digits = v.digit_ids[
        ((h3[:, None] // (_U64(10) ** cols.astype(_U64))) % _U64(10)).astype(np.int64)
    ]
    is_letter = cols[None, :] < nl[:, None]
    is_digit = (~is_letter) & (cols[None, :] < (nl + nd)[:, None])
    is_tail = (cols[None, :] == (nl + nd)[:, None]) & tail[:, None]
    piece = np.where(is_letter | is_tail, letters, digits)
    present = (is_letter | is_digit | is_tail) & model[:, None]
    seg_start = np.where(present, off[piece], seg_start)
    seg_len = np.where(present, length[piece], seg_len)

    # Pseudo-brands (25 %): 2-3 syllables and sometimes a brand-like ending.
    brand = (kind >= 45) & (kind < 70)
    ns = 2 + ((h1 >> _U64(24)) % _U64(2)).astype(np.int64)
    syl = v.syllable_ids[
        ((h2[:, None] >> (_U64(8) * cols[:3].astype(_U64))) % _U64(v.syllable_ids.size)).astype(
            np.int64
        )
    ]
    syl_present = (cols[None, :3] < ns[:, None]) & brand[:, None]
    seg_start[:, :3] = np.where(syl_present, off[syl], seg_start[:, :3])
    seg_len[:, :3] = np.where(syl_present, length[syl], seg_len[:, :3])
    ending = v.brand_ending_ids[(h3 % _U64(v.brand_ending_ids.size)).astype(np.int64)]
    has_end = brand & (((h1 >> _U64(32)) % _U64(3)) == 0)
    seg_start[:, 3] = np.where(has_end, off[ending], seg_start[:, 3])
    seg_len[:, 3] = np.where(has_end, length[ending], seg_len[:, 3])

    # Typos (30 %) of the accent-free spanish form of one of the category's core words.
    typo = kind >= 70
    n_core = v.core_ptr[cats + 1] - v.core_ptr[cats]
    word = v.core_ascii[v.core_ptr[cats] + (h2 % n_core.astype(_U64)).astype(np.int64)]
    ws, wl = off[word], length[word].astype(np.int64)
    op = ((h1 >> _U64(40)) % _U64(3)).astype(np.int64)
    p = (h3 % np.maximum(wl - 1, 1).astype(_U64)).astype(np.int64)  # 0 <= p <= wl - 2
    p = np.minimum(p, np.maximum(wl - 2, 0))
    # delete p: [0, p) + [p+1, wl); double p: [0, p] + [p, wl); swap p, p+1.
    a_len = np.select([op == 0, op == 1], [p, p + 1], p)
    b_start = np.select([op == 0, op == 1], [ws + p + 1, ws + p], ws + p + 1)
    b_len = np.select([op == 0, op == 1], [wl - p - 1, wl - p], np.minimum(1, wl - p - 1))
    c_start = ws + p
    c_len = np.where(op == 2, np.minimum(1, wl - p), 0)
    d_start = ws + p + 2
    d_len = np.where(op == 2, np.maximum(wl - p - 2, 0), 0)
    for col, (s, n) in enumerate(
        ((ws, a_len), (b_start, b_len), (c_start, c_len), (d_start, d_len))
    ):
        seg_start[:, col] = np.where(typo, s, seg_start[:, col])
        seg_len[:, col] = np.where(typo, n, seg_len[:, col])

    lower_pool = v.pool[: v.pool_size]
    data = _gather(lower_pool, seg_start.reshape(-1), seg_len.reshape(-1))
    tok_len = seg_len.sum(axis=1)
    tok_start = np.cumsum(tok_len) - tok_len
    return _case_variants(data, tok_start), tok_start, tok_len


def _block_bits(seed: int, row0: int, n: int, slot_pmf_cdf: np.ndarray):
    """Random words for rows ``[row0, row0 + n)``, one random stream per 4,096-row block."""
    row_words, slot_counts, slot_words = [], [], []
    first = row0 // BLOCK_ROWS
    for b in range(first, first + (n + BLOCK_ROWS - 1) // BLOCK_ROWS):
        nb = min(BLOCK_ROWS, row0 + n - b * BLOCK_ROWS)
        bg = np.random.PCG64(np.random.SeedSequence([seed, b]))
        rw = bg.random_raw(2 * nb).reshape(nb, 2)
        u = ((rw[:, 1] >> _U64(40)) & _U64(0xFFFF)).astype(np.float64) * _INV16
        n_slots = np.searchsorted(slot_pmf_cdf, u, side="right") + _MIN_SLOTS
        row_words.append(rw)
        slot_counts.append(n_slots)
        slot_words.append(bg.random_raw(2 * int(n_slots.sum())).reshape(-1, 2))
    return np.concatenate(row_words), np.concatenate(slot_counts), np.concatenate(slot_words)


def _make_chunk(
    v: _Vocab, state: _State, seed: int, row0: int, n: int, cdfs: dict[str, np.ndarray]
) -> pa.Table:
    """Generate rows ``[row0, row0 + n)`` as a table of four string columns."""
    rw, n_slots, sw = _block_bits(seed, row0, n, cdfs["slots"])
    r0, r1 = rw[:, 0], rw[:, 1]
    n_cats = len(v.names)

    # ---- per row --------------------------------------------------------------------
    cat_u = (r0 >> _U64(11)).astype(np.float64) * (1.0 / 2**53)
    rank = np.minimum(np.searchsorted(v.cat_cdf, cat_u, side="right"), n_cats - 1)
    cat = v.rank_to_cat[rank]
    global_row = np.arange(row0, row0 + n, dtype=np.int64)
    rr = global_row % ROUND_ROBIN_EVERY == 0
    cat = np.where(rr, v.round_robin[(global_row // ROUND_ROBIN_EVERY) % n_cats], cat)
    lang = (r1 & _U64(1)).astype(np.int64)
    reliable = ((r1 >> _U64(1)) & _U64(0xFFFF)).astype(np.float64) * _INV16 < RELIABLE_SHARE
    case_u = ((r1 >> _U64(17)) & _U64(0xFFFF)).astype(np.float64) * _INV16
    case = np.searchsorted(cdfs["case"], case_u, side="right")  # title, sentence, lower, upper

    # ---- per slot -------------------------------------------------------------------
    total = int(n_slots.sum())
    row_start = np.cumsum(n_slots) - n_slots
    row_of = np.repeat(np.arange(n), n_slots)
    pos = np.arange(total) - row_start[row_of]
    s0, s1 = sw[:, 0], sw[:, 1]
    type_u = (s0 & _U64(0xFFFF)).astype(np.float64) * _INV16
    u = ((s0 >> _U64(16)) & _U64(0xFFFFFFFF)).astype(np.float64) * _INV32
    sep_u = (s0 >> _U64(48)).astype(np.float64) * _INV16
    acc_u = (s1 & _U64(0xFFFF)).astype(np.float64) * _INV16
    reuse_u = ((s1 >> _U64(16)) & _U64(0xFFFFFFFF)).astype(np.float64) * _INV32

    first_types = np.array([t for t, _ in _FIRST_SLOT])
    other_types = np.array([t for t, _ in _OTHER_SLOT])
    types = other_types[np.searchsorted(cdfs["other"], type_u, side="right")]
    first_slot = pos == 0
    types[first_slot] = first_types[
        np.searchsorted(cdfs["first"], type_u[first_slot], side="right")
    ]
    second = np.flatnonzero(pos == 1)
    types[second] = np.where(types[second - 1] == _HEAD, types[second], _HEAD)
    last = row_start + n_slots - 1
    prev_conn = np.zeros(total, dtype=bool)
    prev_conn[1:] = (types[:-1] == _CONN) & (pos[1:] > 0)
    types[(types == _CONN) & prev_conn] = _GEN
    types[last] = np.where(types[last] == _CONN, _CORE, types[last])

    slot_cat = cat[row_of]
    slot_lang = lang[row_of]
    ids = np.zeros(total, dtype=np.int64)

    def pick(mask: np.ndarray, cdf: np.ndarray, table: np.ndarray) -> None:
        x = u[mask] + slot_lang[mask]
        idx = np.searchsorted(cdf, x, side="right")
        ids[mask] = table[np.minimum(idx, table.size - 1)]

    m = types == _HEAD
    ids[m] = v.head_ids[slot_lang[m], slot_cat[m]]
    m = types == _CORE
    c = slot_cat[m]
    lo, hi = v.core_ptr[c], v.core_ptr[c + 1]
    ids[m] = v.core_ids[slot_lang[m], lo + ((hi - lo) * u[m] ** 1.6).astype(np.int64)]
    m = types == _BRAND
    c = slot_cat[m]
    lo, hi = v.brand_ptr[c], v.brand_ptr[c + 1]
    ids[m] = v.brand_ids[lo + ((hi - lo) * u[m] ** 1.5).astype(np.int64)]
    pick(types == _CONN, v.conn_cdf, v.conn_ids)
    pick(types == _GEN, v.gen_cdf, v.gen_ids)
    pick(types == _PREFIX, v.pre_cdf, v.pre_ids)
    pick(types == _NUM, v.num_cdf, v.num_ids)
    novel = types == _NOVEL
    static = ~novel
    drop = static & (acc_u < ACCENT_DROP)
    ids[drop] = v.folded[ids[drop]]

    # ---- truncate to MAX_WORDS words ------------------------------------------------
    sep_kind = np.searchsorted(v.sep_cdf, sep_u, side="right")
    tok_words = np.where(novel, 1, v.words[np.where(novel, 0, ids)]).astype(np.int64)
    slot_words = tok_words + v.sep_words[sep_kind]
    cum = np.cumsum(slot_words)
    # Words of the row before each slot; keep the slots whose token ends within the cap.
    before = cum - slot_words - np.repeat(cum[row_start] - slot_words[row_start], n_slots)
    keep = before + tok_words <= MAX_WORDS
    if not keep.all():
        row_of, pos, ids, sep_kind, sep_u, reuse_u, slot_cat, novel = (
            a[keep] for a in (row_of, pos, ids, sep_kind, sep_u, reuse_u, slot_cat, novel)
        )
        n_slots = np.bincount(row_of, minlength=n)
        total = int(n_slots.sum())
        row_start = np.cumsum(n_slots) - n_slots
        last = row_start + n_slots - 1
    static = ~novel

    # ---- novel tokens (Heaps' law streams per category) -----------------------------
    nov_idx = np.flatnonzero(novel)
    nov_cat = slot_cat[nov_idx]
    order = np.argsort(nov_cat, kind="stable")
    sorted_cat = nov_cat[order]
    rank_sorted = np.arange(order.size) - np.searchsorted(sorted_cat, sorted_cat, side="left")
    within = np.empty(order.size, dtype=np.int64)
    within[order] = rank_sorted
    t = (state.novel_seen[nov_cat] + within + 1).astype(np.float64)
    d_prev = _heaps_d(t - 1)
    is_new = _heaps_d(t) > d_prev
    nov_id = np.where(is_new, d_prev, np.floor(d_prev * reuse_u[nov_idx] ** 2)).astype(np.int64)
    state.novel_seen += np.bincount(nov_cat, minlength=n_cats)
    keys = (nov_cat.astype(np.int64) << 32) | nov_id
    uniq, inverse = np.unique(keys, return_inverse=True)
    dyn_pool, dyn_start, dyn_len = _novel_strings(
        v, seed, (uniq >> 32).astype(np.int64), (uniq & 0xFFFFFFFF).astype(_U64)
    )
    dyn_size = int(dyn_len.sum())

    # ---- bytes of the titles --------------------------------------------------------
    # Case variant per slot: 0 lower, 1 title, 2 upper (sentence case: title then lower).
    row_case = case[row_of]
    variant = np.array([1, 0, 0, 2], dtype=np.int64)[row_case]
    variant[(row_case == 1) & (pos == 0)] = 1
    pool = np.concatenate([v.pool, dyn_pool])
    tok_start = np.empty(total, dtype=np.int64)
    tok_len = np.empty(total, dtype=np.int64)
    sid = ids[static]
    tok_start[static] = v.off[sid] + variant[static] * v.pool_size
    tok_len[static] = v.length[sid]
    tok_start[nov_idx] = 3 * v.pool_size + variant[nov_idx] * dyn_size + dyn_start[inverse]
    tok_len[nov_idx] = dyn_len[inverse]
    sep_id = v.sep_ids[sep_kind]
    end_u = sep_u[last]
    sep_id[last] = v.end_sep_ids[np.searchsorted(v.end_sep_cdf, end_u, side="right")]
    seg_start = np.empty(2 * total, dtype=np.int64)
    seg_len = np.empty(2 * total, dtype=np.int64)
    seg_start[0::2] = tok_start
    seg_len[0::2] = tok_len
    seg_start[1::2] = v.off[sep_id]
    seg_len[1::2] = v.length[sep_id]
    data = _gather(pool, seg_start, seg_len)
    row_bytes = np.add.reduceat(seg_len, 2 * row_start)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(row_bytes, out=offsets[1:])
    titles = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))

    state.used[sid] = True
    state.cat_rows += np.bincount(cat, minlength=n_cats)
    return pa.table(
        {
            "title": titles,
            "label_quality": pa.array(LABEL_QUALITIES).take(pa.array(reliable.astype(np.int8))),
            "language": pa.array(LANGUAGES).take(pa.array(lang.astype(np.int8))),
            "category": pa.array(v.names).take(pa.array(cat)),
        }
    )


@contextmanager
def _open_sink(path: Path) -> Iterator[BinaryIO | pa.NativeFile]:
    if path.name.endswith(".gz"):
        with (
            open(path, "wb") as raw,
            gzip.GzipFile(
                filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0
            ) as gz,
        ):
            yield gz
    else:
        with pa.OSFile(str(path), "wb") as f:
            yield f


def write_synthetic_titles(
    path: str | Path,
    rows: int,
    *,
    seed: int = 0,
    categories: int = 1588,
    chunk_rows: int = 200_000,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Write ``rows`` synthetic MercadoLibre-style titles to a CSV file.

    The file has the header ``title,label_quality,language,category`` (see the module
    docstring for the model of the data) and is gzip-compressed when ``path`` ends with
    ``.gz``.  Rows are generated and written ``chunk_rows`` at a time (rounded up to a
    multiple of 4,096) with :class:`pyarrow.csv.CSVWriter`, so memory stays bounded
    whatever ``rows`` is; values are quoted by pyarrow.

    Args:
        path: output file; parent directories are created.
        rows: number of data rows.
        seed: everything (vocabulary, categories, rows) is a function of the seed; the
            same arguments give a byte-identical file.
        categories: number of categories (1,588 in the real data).
        chunk_rows: rows generated per chunk; does not change the output.
        progress: called with the number of rows written so far after each chunk.

    Returns:
        ``{"rows", "categories", "distinct_tokens", "seconds", "bytes"}`` where
        ``categories`` is the number of distinct categories written and
        ``distinct_tokens`` estimates the distinct lower-cased ``\\W+`` tokens of the
        titles (exact for the static vocabulary; novel tokens counted by id, so rare
        hash collisions make it a slight over-estimate).
    """
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    if categories < 1:
        raise ValueError(f"categories must be >= 1, got {categories}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    seed = int(seed) % 2**63
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    v = _build_vocab(seed, categories)
    state = _State(
        novel_seen=np.zeros(categories, dtype=np.int64),
        cat_rows=np.zeros(categories, dtype=np.int64),
        used=np.zeros(v.length.size, dtype=bool),
    )
    cdfs = {
        "slots": _weights_cdf(_SLOT_PMF)[:-1],
        "case": _weights_cdf(_CASE_PMF)[:-1],
        "first": _weights_cdf([p for _, p in _FIRST_SLOT])[:-1],
        "other": _weights_cdf([p for _, p in _OTHER_SLOT])[:-1],
    }
    step = -(-chunk_rows // BLOCK_ROWS) * BLOCK_ROWS
    schema = pa.schema([(name, pa.string()) for name in COLUMNS])
    with _open_sink(path) as sink:
        sink.write((",".join(COLUMNS) + "\n").encode())
        writer = pacsv.CSVWriter(
            sink, schema, write_options=pacsv.WriteOptions(include_header=False)
        )
        for row0 in range(0, rows, step):
            n = min(step, rows - row0)
            writer.write_table(_make_chunk(v, state, seed, row0, n, cdfs))
            if progress is not None:
                progress(row0 + n)
        writer.close()

    used = np.flatnonzero(state.used)
    starts, ends = v.atom_ptr[used], v.atom_ptr[used + 1]
    atoms = _gather(v.atom_ids, starts, ends - starts)
    novel = int(_heaps_d(state.novel_seen.astype(np.float64)).sum())
    return {
        "rows": rows,
        "categories": int(np.count_nonzero(state.cat_rows)),
        "distinct_tokens": int(np.unique(atoms).size) + novel,
        "seconds": time.perf_counter() - started,
        "bytes": path.stat().st_size,
    }

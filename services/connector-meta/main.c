/* omnichat-connector-meta: the connector engine with the Meta provider (Messenger, Instagram). */
#include "meta.h"
#include "service.h"

int main(int argc, char **argv)
{
    return conn_main(&meta_provider, argc, argv);
}
